//! The job store: jobs, their events and their files. One process keeps them in SQLite
//! ([`sqlite`]); a scaled-out service keeps them in NATS JetStream ([`nats`]), shared by every
//! API node and worker (docs/scaling-out.md). Either way, everything a client was told
//! survives a restart.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use thiserror::Error;

pub mod nats;
pub mod sqlite;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("job database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("NATS: {0}")]
    Nats(String),
    /// Said at start, when there is nobody to reconnect to.
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// A job's status, as in Replicate/cog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Planning,
    Rendering,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Planning,
        Status::Rendering,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Planning => "planning",
            Status::Rendering => "rendering",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .unwrap_or(Status::Failed)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Canceled)
    }
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// Who created it: an API key's id, or `anonymous`.
    pub owner: String,
    pub status: Status,
    /// The normalised request (defaults filled in, the seed chosen).
    pub input: Value,
    /// Files and metadata once done.
    pub output: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    /// How many times the worker has started it (a job interrupted by a crash runs again).
    pub attempts: u32,
    /// The model whose workers take it; only a scaled-out service queues per model.
    pub model: Option<String>,
}

impl Job {
    /// A new job waiting in the queue.
    pub fn queued(id: String, owner: String, input: Value) -> Job {
        Job {
            id,
            owner,
            status: Status::Queued,
            input,
            output: None,
            error_code: None,
            error_message: None,
            created_ms: now_ms(),
            started_ms: None,
            completed_ms: None,
            attempts: 0,
            model: None,
        }
    }
}

/// A stored file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    pub id: String,
    pub job_id: String,
    pub owner: String,
    /// `image`, `mask`, `layout`.
    pub kind: String,
    pub content_type: String,
    /// File name inside `files/`; never from a client.
    pub name: String,
    pub bytes: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A stored progress event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub kind: String,
    pub data: Value,
}

pub enum Insert {
    Created,
    /// Same owner and `Idempotency-Key` as an earlier request: that job's id and request hash.
    Existing {
        id: String,
        request_hash: String,
    },
    QueueFull {
        queued: usize,
    },
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRequest {
    /// The job had not started: it is canceled now.
    CanceledQueued,
    /// The job is running: it will end `canceled`, whatever its outcome (the worker records
    /// the end through [`Store::finish`], which honours the request).
    WillStop,
    /// The job had already ended, in this status: the request came too late.
    AlreadyEnded(Status),
}

/// Jobs a crash or kill interrupted, as start-up recovery left them.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Back in the queue for another attempt.
    pub requeued: Vec<String>,
    /// Interrupted too often: failed with `interrupted`, and the message recorded.
    pub failed: Vec<(String, String)>,
    /// A cancel had been requested while they ran: canceled.
    pub canceled: Vec<String>,
}

/// Kinds of the events that end a job's event stream.
pub const TERMINAL_EVENTS: [&str; 3] = ["succeeded", "failed", "canceled"];

/// Where jobs live: one process's SQLite database, or the JetStream resources a scaled-out
/// service shares. The methods are the same; each answers for the whole service.
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Nats(nats::NatsStore),
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*),
            Store::Nats(s) => s.$method($($arg),*),
        }
    };
}

impl Store {
    /// The single-process store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        sqlite::SqliteStore::open(data_dir).map(Store::Sqlite)
    }

    pub fn nats(&self) -> Option<&nats::NatsStore> {
        match self {
            Store::Nats(s) => Some(s),
            Store::Sqlite(_) => None,
        }
    }

    /// After a crash: see [`sqlite::SqliteStore::recover_interrupted`]. JetStream redelivers
    /// what a dead worker held by itself, so a scaled-out store recovers nothing here.
    pub fn recover_interrupted(&self, max_attempts: u32) -> Result<Recovered, StoreError> {
        match self {
            Store::Sqlite(s) => s.recover_interrupted(max_attempts),
            Store::Nats(_) => Ok(Recovered::default()),
        }
    }

    /// Inserts a queued job unless the queue holds `capacity` jobs already or the owner used
    /// this idempotency key before.
    pub fn insert_job(
        &self,
        job: &Job,
        idempotency: Option<(&str, &str)>,
        capacity: usize,
    ) -> Result<Insert, StoreError> {
        each!(self.insert_job(job, idempotency, capacity))
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        each!(self.job(id))
    }

    /// Takes the oldest queued job and marks it `planning`.
    pub fn claim_next(&self) -> Result<Option<Job>, StoreError> {
        each!(self.claim_next())
    }

    /// Whether [`Store::claim_next`] itself waits for a job to arrive (JetStream's pull
    /// does), so the worker need not sleep between empty claims.
    pub fn claim_waits(&self) -> bool {
        matches!(self, Store::Nats(_))
    }

    pub fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        each!(self.set_status(id, status))
    }

    /// Records the end of a job and answers the status it ended in: a cancel requested while
    /// it ran wins over `status` (the client was told the job would end canceled).
    pub fn finish(
        &self,
        id: &str,
        status: Status,
        output: Option<&Value>,
        error: Option<(&str, &str)>,
    ) -> Result<Status, StoreError> {
        each!(self.finish(id, status, output, error))
    }

    /// Puts an interrupted job back in the queue, or cancels it when a cancel was requested;
    /// answers the status it is left in.
    pub fn requeue(&self, id: &str) -> Result<Status, StoreError> {
        each!(self.requeue(id))
    }

    /// Cancels a queued job at once, or marks a running one so that it ends `canceled`;
    /// atomically, so the answer is how the job will end. `None` for an unknown job.
    pub fn request_cancel(&self, id: &str) -> Result<Option<CancelRequest>, StoreError> {
        each!(self.request_cancel(id))
    }

    pub fn is_cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        each!(self.is_cancel_requested(id))
    }

    pub fn queued_count(&self) -> Result<usize, StoreError> {
        each!(self.queued_count())
    }

    pub fn counts_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        each!(self.counts_by_status())
    }

    /// Appends an event and returns its sequence number (1-based per job).
    pub fn add_event(&self, job_id: &str, kind: &str, data: &Value) -> Result<i64, StoreError> {
        each!(self.add_event(job_id, kind, data))
    }

    /// Appends the terminal event `kind` unless the job has one already; its sequence
    /// number when it was added.
    pub fn add_terminal_event_if_missing(
        &self,
        job_id: &str,
        kind: &str,
        data: &Value,
    ) -> Result<Option<i64>, StoreError> {
        each!(self.add_terminal_event_if_missing(job_id, kind, data))
    }

    pub fn events_after(&self, job_id: &str, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
        each!(self.events_after(job_id, after))
    }

    /// Stores a file's bytes and its record.
    pub fn put_file(&self, record: &FileRecord, bytes: &[u8]) -> Result<(), StoreError> {
        each!(self.put_file(record, bytes))
    }

    pub fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        each!(self.file(id))
    }

    /// A stored file's bytes; `None` when they are gone (expired).
    pub fn read_file(&self, record: &FileRecord) -> Result<Option<Vec<u8>>, StoreError> {
        each!(self.read_file(record))
    }

    /// Deletes files whose TTL has passed; returns how many. JetStream expires them itself.
    pub fn delete_expired_files(&self, now: i64) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_expired_files(now),
            Store::Nats(_) => Ok(0),
        }
    }
}
