//! letterpress-api: the HTTP poster service: Replicate-style jobs with server-sent progress,
//! an OpenAI-compatible images endpoint, layout planning and glyph rendering endpoints, a
//! bounded queue in SQLite, a worker thread that owns the engine, API keys, rate limits, CORS,
//! metrics and an OpenAPI document.
//!
//! The crate never touches tensors: posters are made through [`PosterEngine`], which the
//! binary implements with letterpress-poster and passes in as an [`EngineLoader`]
//! (docs/architecture.md, "Dependency rules").
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use letterpress_api::{Settings, serve};
//!
//! let settings = Settings::load(None, std::env::vars())?;
//! serve(settings, None).await?; // no model: plans and renders; generations answer 503
//! # Ok(()) }
//! ```
//!
//! Tests build the router with [`app`] and call it with `tower::ServiceExt::oneshot`; tests of
//! connection handling serve it on a port of their own with [`serve_with`].

mod admission;
mod auth;
mod connections;
mod edit_input;
mod engine;
mod error;
mod hub;
mod ids;
mod init_image;
mod input;
mod job_error;
mod job_events;
mod metrics;
mod openapi;
mod queue;
mod rate_limit;
mod routes;
mod schema;
mod server;
mod settings;
mod state;
mod store;
mod worker;

pub use auth::sha256_hex;
pub use connections::serve_with;
pub use engine::{
    EngineEdit, EngineError, EngineEvent, EngineInfo, EngineInit, EngineJob, EngineLoader,
    PosterEngine, StepProgress, StopReason, StopToken,
};
pub use error::ApiError;
pub use queue::EMBEDDED_MODEL;
pub use routes::app;
pub use schema::{Certificate, LineCertificate};
pub use server::{ServeError, serve, serve_checked, work};
pub use settings::{Settings, SettingsError};
pub use state::{AppState, EditCheck, EditRefusal, MAX_ATTEMPTS, ModelState, Shared, StartError};
/// For other JetStream users of the binary (the distributed dataset build).
pub use store::nats::{connect_client as connect_nats, ensure_stream};
pub use worker::spawn as spawn_worker;
