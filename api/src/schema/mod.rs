//! The types at the HTTP edge: what requests carry, what answers and stored outputs hold.
//! The OpenAPI document (`crate::openapi`) is derived from them, so it states what the
//! handlers build.

mod generation;
mod params;
mod requests;
mod responses;

pub use generation::{
    Certificate, FileRef, Generation, GenerationEvent, GenerationFiles, GenerationMetrics,
    GenerationOutput, GenerationUrls, JobError, LineCertificate,
};
pub use params::{FileId, GenerationId};
pub use requests::{
    EditRequest, GenerationRequest, Keywords, LayoutRequest, OpenAIImageRequest, RenderRequest,
};
pub use responses::{
    Binary, GenerationAvailability, Health, ModelQueue, OpenAIImage, OpenAIImages, PlanResponse,
    Readiness, Rendering, ServiceIndex,
};
