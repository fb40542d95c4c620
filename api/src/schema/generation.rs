//! A generation job's output as stored, and the job as clients see it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::job_error::JobErrorCode;
use crate::store::Status;

/// What a succeeded job stores as its output (and sends in its `succeeded` event): the ids
/// of its files, the seed its first image used, and how long it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerationOutput {
    /// File ids of the images, in seed order.
    pub images: Vec<String>,
    /// File id of the glyph mask.
    pub mask: String,
    /// File id of the layout (JSON).
    pub layout: String,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub metrics: Option<GenerationMetrics>,
    /// With `verify` or `repair`: how each image's lines read back, in the order of `images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub certificates: Option<Vec<Certificate>>,
}

/// How one image's planned lines read back with OCR, compared after MARIO-Eval's
/// normalisation (lower case, surrounding punctuation dropped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    /// Lines that read exactly as intended.
    pub lines_ok: u32,
    /// Planned lines.
    pub line_count: u32,
    /// Mean of 1 − edit_distance over the lines (1 with no lines).
    pub score: f64,
    /// Repair rounds run.
    pub rounds: u32,
    /// The seed of each repair round.
    pub repair_seeds: Vec<u64>,
    pub lines: Vec<LineCertificate>,
}

/// How one planned line reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineCertificate {
    /// 0-based index into the layout's lines.
    pub index: u32,
    /// What the line should say.
    pub text: String,
    /// What OCR read in its box.
    pub read: String,
    /// Normalised edit distance: 0 identical, 1 nothing in common.
    pub edit_distance: f64,
    /// Mean OCR word confidence, 0–100.
    pub confidence: f64,
    pub ok: bool,
    /// The repair round whose paint the line shows; 0 for the first image.
    pub round: u32,
}

/// Timings of a finished job, as Replicate reports them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerationMetrics {
    /// Seconds from the worker taking the job to its last file stored.
    pub predict_time: f64,
}

/// A stored file as an answer names it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FileRef {
    pub id: String,
    pub url: String,
    /// Only for jobs created with response_format b64_json: the bytes in base64, or null
    /// once the file has expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub b64_json: Option<Option<String>>,
    /// An image of a job with `verify` or `repair`: how its lines read back (the same as its
    /// entry in `certificates`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub certificate: Option<Certificate>,
}

/// A succeeded job's files.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GenerationFiles {
    pub images: Vec<FileRef>,
    pub mask: FileRef,
    pub layout: FileRef,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub metrics: Option<GenerationMetrics>,
    /// With `verify` or `repair`: how each image's lines read back, in the order of `images`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub certificates: Option<Vec<Certificate>>,
}

/// Why a failed job failed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobError {
    pub code: JobErrorCode,
    pub message: Option<String>,
}

/// Where to follow a job.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GenerationUrls {
    pub get: String,
    pub cancel: String,
    pub events: String,
}

/// A generation job as clients see it (Replicate's prediction shape).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Generation {
    pub id: String,
    /// Always `generation`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub status: Status,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// The request with its defaults filled in and its seed chosen.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    #[schema(required = true)]
    pub output: Option<GenerationFiles>,
    #[schema(required = true)]
    pub error: Option<JobError>,
    pub urls: GenerationUrls,
}

/// The kinds of event `GET /v1/generations/{id}/events` sends. Described here; the worker
/// and the hub still name them with strings.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Queued,
    Layout,
    Rendering,
    Step,
    Verified,
    Requeued,
    Succeeded,
    Failed,
    Canceled,
}

/// One server-sent event; `data` is a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GenerationEvent {
    pub id: String,
    #[schema(inline)]
    pub event: EventKind,
    pub data: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_output_reads_back_with_and_without_metrics() {
        // The shape the worker stores: file ids, the seed, then metrics once timed.
        let stored = json!({"images": ["file_a", "file_b"], "mask": "file_m", "layout": "file_l", "seed": 7});
        let out: GenerationOutput = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!((out.images.len(), out.seed, out.metrics), (2, 7, None));
        assert_eq!(serde_json::to_value(&out).unwrap(), stored);
        let mut timed = stored;
        timed["metrics"] = json!({"predict_time": 1.5});
        let out: GenerationOutput = serde_json::from_value(timed.clone()).unwrap();
        assert_eq!(out.metrics, Some(GenerationMetrics { predict_time: 1.5 }));
        assert_eq!(serde_json::to_value(&out).unwrap(), timed);
    }
}
