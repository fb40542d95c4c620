//! The crate's one error type : every variant says which file, key or field.

use std::path::PathBuf;

/// Errors from loading and running the diffusion models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A config field with a value this implementation does not support or that contradicts
    /// another field.
    #[error("{model} config: {message}")]
    Config {
        model: &'static str,
        message: String,
    },

    #[error("no weights in {dir}: expected {expected}")]
    WeightsNotFound { dir: PathBuf, expected: String },

    /// Pickled checkpoints can run arbitrary code on load; we never unpickle them.
    #[error(
        "{path} is a pickled PyTorch checkpoint, which letterpress never loads (unpickling can run \
         arbitrary code). Convert it once with Python: `from safetensors.torch import save_file; \
         import torch; sd = torch.load(\"{file}\", map_location=\"cpu\", weights_only=True); \
         save_file(sd.get(\"state_dict\", sd), \"model.safetensors\")`, or load the folder with \
         diffusers and call `save_pretrained(dir, safe_serialization=True)`"
    )]
    PickleRefused { path: PathBuf, file: String },

    #[error(
        "weights in {path} do not fit the model built from its config: {} missing key(s) [{}], \
         {} unexpected key(s) [{}], {} shape mismatch(es) [{}]",
        missing.len(), preview(missing), unexpected.len(), preview(unexpected),
        mismatched.len(), preview(mismatched)
    )]
    KeyMismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<String>,
    },

    /// A safetensors file whose header does not describe its data.
    #[error("invalid safetensors file {path}: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("{what}: {message}")]
    Shape { what: &'static str, message: String },

    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// A tensor operation failed (wrong shapes or dtypes reach here as libtorch's message).
    #[error("torch: {0}")]
    Tch(#[from] tch::TchError),

    #[error("torch error in {context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },

    /// A generation request that cannot run (the message says what is allowed).
    #[error("invalid request: {0}")]
    Request(String),

    /// A scheduler used against its contract: a step before `set_timesteps`, a timestep that
    /// is not in its schedule, a step after the last, a model output of another shape than
    /// the sample.
    #[error("{scheduler}: {message}")]
    Scheduler {
        scheduler: &'static str,
        message: String,
    },

    /// An invariant of this crate's own code failed (a value it produced itself is missing or
    /// malformed): a bug here, not a problem of the request.
    #[error("internal error: {0}")]
    Internal(String),

    /// The caller's cancel flag was set between steps.
    #[error("generation canceled")]
    Canceled,

    /// A training run that cannot start or resume (bad option, checkpoint of another run).
    #[error("training: {0}")]
    Training(String),
}

/// At most 20 keys in a message; the full lists stay in the error value.
fn preview(keys: &[String]) -> String {
    let mut s = keys.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > 20 {
        s.push_str(&format!(", … {} more", keys.len() - 20));
    }
    s
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches context to tch's errors.
pub(crate) trait TorchContext<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn ctx(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Torch {
            context: context.into(),
            source,
        })
    }
}

pub(crate) fn config_err(model: &'static str, message: impl Into<String>) -> Error {
    Error::Config {
        model,
        message: message.into(),
    }
}
