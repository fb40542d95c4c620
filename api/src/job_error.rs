//! Why a job did not succeed: the codes stored with a failed or canceled job, answered in its
//! `error.code` and in its `failed` event, and mapped to an HTTP status by the OpenAI shim.
//! One enum so that the worker that records a code and the routes that read it cannot disagree
//! on its spelling.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The reason a job ended without images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobErrorCode {
    /// The model failed (or panicked) while generating.
    GenerationFailed,
    /// The stored request could not be read back.
    InvalidInput,
    /// The layout could not be planned or drawn.
    InvalidLayout,
    /// The loaded model cannot do what the request asks (e.g. img2img).
    Unsupported,
    /// The job ran past the server's job timeout.
    Timeout,
    /// No model was loaded when the job ran.
    NoModel,
    /// A failure of the server's own (storing or encoding a file).
    InternalError,
    /// The client canceled it.
    Canceled,
    /// The server stopped while it ran, more often than a job is retried.
    Interrupted,
}

impl JobErrorCode {
    pub const ALL: [JobErrorCode; 9] = [
        JobErrorCode::GenerationFailed,
        JobErrorCode::InvalidInput,
        JobErrorCode::InvalidLayout,
        JobErrorCode::Unsupported,
        JobErrorCode::Timeout,
        JobErrorCode::NoModel,
        JobErrorCode::InternalError,
        JobErrorCode::Canceled,
        JobErrorCode::Interrupted,
    ];

    /// The code as stored and answered (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            JobErrorCode::GenerationFailed => "generation_failed",
            JobErrorCode::InvalidInput => "invalid_input",
            JobErrorCode::InvalidLayout => "invalid_layout",
            JobErrorCode::Unsupported => "unsupported",
            JobErrorCode::Timeout => "timeout",
            JobErrorCode::NoModel => "no_model",
            JobErrorCode::InternalError => "internal_error",
            JobErrorCode::Canceled => "canceled",
            JobErrorCode::Interrupted => "interrupted",
        }
    }

    /// Reads a stored code. A code no version of the server wrote (a hand-edited database)
    /// reads as a generation failure, the least specific one, rather than failing the read.
    pub fn parse(code: &str) -> JobErrorCode {
        JobErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or(JobErrorCode::GenerationFailed)
    }
}

impl std::fmt::Display for JobErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_spelling_is_the_serde_spelling_and_reads_back() {
        for code in JobErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
            assert_eq!(JobErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(
            JobErrorCode::parse("no_such_code"),
            JobErrorCode::GenerationFailed
        );
    }
}
