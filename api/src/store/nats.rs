//! The scaled-out store: NATS JetStream holds everything API nodes and workers share
//! (docs/scaling-out.md has the subjects, buckets and delivery guarantees):
//!
//! - `LETTERPRESS_JOBS`, a work-queue stream with a subject per model
//!   (`letterpress.jobs.<model>`): one message per job, pulled by that model's workers;
//! - the key-value bucket `letterpress_jobs`: job records, changed with compare-and-set on the
//!   revision, so two nodes never both move a job; `letterpress_idempotency` for
//!   `Idempotency-Key`;
//! - `LETTERPRESS_EVENTS` (`letterpress.events.<job>`): each job's events, replayed by any node;
//!   live copies (with previews) go out on `letterpress.live.<job>`;
//! - the object store `letterpress_files` and the bucket `letterpress_file_records`, both with
//!   the file TTL;
//! - `letterpress_models` and `letterpress_workers`: which models workers hold.
//!
//! The service's handlers and its worker thread are synchronous over the store (SQLite is),
//! so every call here runs on a runtime of its own and the caller waits for its answer: that
//! works from a plain thread and from inside another runtime alike.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, Context, kv, object_store, stream};
use serde_json::Value;

use super::{
    CancelRequest, FileRecord, Insert, Job, Status, StoreError, StoredEvent, TERMINAL_EVENTS,
};

mod events;
mod files;
mod fleet;
mod jobs;
#[cfg(test)]
mod tests;

pub use fleet::{ModelInfo, QueueDepth};

/// The work-queue stream: one message per queued job.
const JOBS_STREAM: &str = "LETTERPRESS_JOBS";
const JOBS_SUBJECTS: &str = "letterpress.jobs.>";
/// Copies of jobs that ran out of deliveries, with the reason.
const DEAD_STREAM: &str = "LETTERPRESS_DEAD";
const DEAD_SUBJECTS: &str = "letterpress.dead.>";
const EVENTS_STREAM: &str = "LETTERPRESS_EVENTS";
const EVENTS_SUBJECTS: &str = "letterpress.events.>";
/// Core (not stored) subjects: live events, and cancels for whichever worker runs the job.
const LIVE_SUBJECTS: &str = "letterpress.live.>";
const CANCEL_SUBJECT: &str = "letterpress.cancel";

/// How the store connects and what it keeps how long.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port`.
    pub url: String,
    /// Shown in the server's connection list.
    pub client_name: String,
    /// Generated files, their records and job events expire after this.
    pub file_ttl: Duration,
    /// A job not acknowledged (nor reported in progress) for this long goes to another worker.
    pub ack_wait: Duration,
    /// Deliveries of a job before it fails with `interrupted`.
    pub max_deliveries: u32,
}

pub struct NatsStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: Context,
    jobs: kv::Store,
    idempotency: kv::Store,
    file_records: kv::Store,
    files: object_store::ObjectStore,
    models: kv::Store,
    workers: kv::Store,
    work: stream::Stream,
    events: stream::Stream,
    options: NatsOptions,
    /// The pull consumer of the model this process's worker holds (workers only).
    consumer: Mutex<Option<jetstream::consumer::PullConsumer>>,
    /// Jobs this process is running: the handle that acknowledges each one's message.
    leases: Mutex<HashMap<String, Arc<jetstream::message::Acker>>>,
    /// Told of a cancel for a job this process may be running.
    cancel_hook: OnceLock<CancelHook>,
}

type CancelHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The runtime every NATS call runs on; it lives as long as the process (a runtime may not
/// be dropped from inside another, which is where the last store handle may go).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("letterpress-nats")
            .enable_all()
            .build()
            .expect("starting the NATS runtime")
    })
}

/// A NATS error under what was being done, for `map_err`.
fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> StoreError + '_ {
    move |e| StoreError::Nats(format!("{what}: {e}"))
}

impl NatsStore {
    /// Connects and creates the streams and buckets unless they exist. An unreachable server
    /// is an error at once, not a retry loop; after that the client reconnects by itself.
    pub fn connect(options: NatsOptions) -> Result<NatsStore, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime().spawn(async move {
            let _ = tx.send(Inner::connect(options).await);
        });
        let inner = rx
            .recv()
            .map_err(|e| StoreError::Nats(format!("connecting: {e}")))??;
        Ok(NatsStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs `f` on the NATS runtime and waits for its answer.
    fn block<T, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Nats("the NATS task ended without an answer".into()))?
    }

    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    pub fn insert_job(
        &self,
        job: &Job,
        idempotency: Option<(&str, &str)>,
        capacity: usize,
    ) -> Result<Insert, StoreError> {
        let job = job.clone();
        let idempotency = idempotency.map(|(k, h)| (k.to_string(), h.to_string()));
        self.block(move |s| async move { s.insert_job(job, idempotency, capacity).await })
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let id = id.to_string();
        self.block(move |s| async move { Ok(s.record(&id).await?.map(|(r, _)| r.into_job())) })
    }

    pub fn claim_next(&self) -> Result<Option<Job>, StoreError> {
        self.block(|s| async move { s.claim_next().await })
    }

    pub fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        let id = id.to_string();
        self.block(move |s| async move {
            s.update(&id, |r| {
                // Ended by another worker meanwhile (this one lost NATS past the ack wait).
                if Status::parse(&r.status).is_terminal() {
                    return None;
                }
                r.status = status.as_str().into();
                Some(())
            })
            .await
            .map(|_| ())
        })
    }

    pub fn finish(
        &self,
        id: &str,
        status: Status,
        output: Option<&Value>,
        error: Option<(&str, &str)>,
    ) -> Result<Status, StoreError> {
        let id = id.to_string();
        let output = output.cloned();
        let error = error.map(|(c, m)| (c.to_string(), m.to_string()));
        self.block(move |s| async move { s.finish(&id, status, output, error).await })
    }

    pub fn requeue(&self, id: &str) -> Result<Status, StoreError> {
        let id = id.to_string();
        self.block(move |s| async move { s.requeue(&id).await })
    }

    pub fn request_cancel(&self, id: &str) -> Result<Option<CancelRequest>, StoreError> {
        let id = id.to_string();
        self.block(move |s| async move { s.request_cancel(&id).await })
    }

    pub fn is_cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.block(move |s| async move {
            Ok(s.record(&id)
                .await?
                .is_some_and(|(r, _)| r.cancel_requested))
        })
    }

    /// Jobs in the work queue (waiting, or held by a worker and not yet acknowledged).
    pub fn queued_count(&self) -> Result<usize, StoreError> {
        self.block(|s| async move {
            let info = s.work.get_info().await.map_err(err("the job stream"))?;
            Ok(info.state.messages as usize)
        })
    }

    pub fn counts_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        self.block(|s| async move { s.counts_by_status().await })
    }

    pub fn add_event(&self, job_id: &str, kind: &str, data: &Value) -> Result<i64, StoreError> {
        let (id, kind, data) = (job_id.to_string(), kind.to_string(), data.clone());
        self.block(move |s| async move {
            let seq = s.append_event(&id, &kind, &data, false).await?;
            Ok(seq.unwrap_or_default())
        })
    }

    pub fn add_terminal_event_if_missing(
        &self,
        job_id: &str,
        kind: &str,
        data: &Value,
    ) -> Result<Option<i64>, StoreError> {
        let (id, kind, data) = (job_id.to_string(), kind.to_string(), data.clone());
        // The caller broadcasts it (job_events::add_missing_end), as with every event.
        self.block(move |s| async move { s.append_event(&id, &kind, &data, true).await })
    }

    pub fn events_after(&self, job_id: &str, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let id = job_id.to_string();
        self.block(move |s| async move { s.events_after(&id, after).await })
    }

    /// Sends an event to every node's live listeners (`letterpress.live.<job>`).
    pub fn publish_live(&self, job_id: &str, seq: i64, kind: &str, data: &Value) {
        let (id, kind, data) = (job_id.to_string(), kind.to_string(), data.clone());
        let _ = self.block(move |s| async move {
            s.publish_live(&id, seq, &kind, &data).await;
            Ok(())
        });
    }

    /// Calls `on_event(job, seq, kind, data)` for every live event any node publishes.
    pub fn on_live_events(&self, on_event: impl Fn(&str, i64, String, Value) + Send + 'static) {
        let inner = self.inner.clone();
        runtime().spawn(async move { inner.forward_live(on_event).await });
    }

    /// Calls `on_cancel(job)` for every cancel requested of a running job, on any node.
    /// Also for cancels recorded while this process was away from NATS: the running jobs'
    /// records are read each time their leases are renewed.
    pub fn on_cancels(&self, on_cancel: impl Fn(&str) + Send + Sync + 'static) {
        let on_cancel: CancelHook = Arc::new(on_cancel);
        let _ = self.inner.cancel_hook.set(on_cancel.clone());
        let inner = self.inner.clone();
        runtime().spawn(async move { inner.forward_cancels(move |id| on_cancel(id)).await });
    }

    pub fn put_file(&self, record: &FileRecord, bytes: &[u8]) -> Result<(), StoreError> {
        let (record, bytes) = (record.clone(), bytes.to_vec());
        self.block(move |s| async move { s.put_file(record, bytes).await })
    }

    pub fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let id = id.to_string();
        self.block(move |s| async move { s.file(&id).await })
    }

    pub fn read_file(&self, record: &FileRecord) -> Result<Option<Vec<u8>>, StoreError> {
        let id = record.id.clone();
        self.block(move |s| async move { s.read_file(&id).await })
    }

    /// Makes this process a worker for `info`'s model: registers the model, announces the
    /// worker while it lives, and opens the model's pull consumer for [`Self::claim_next`].
    pub fn serve_model(&self, info: &ModelInfo, worker_id: &str) -> Result<(), StoreError> {
        let (info, worker_id) = (info.clone(), worker_id.to_string());
        self.block(move |s| async move { s.serve_model(info, worker_id).await })
    }

    /// The models workers have registered, with how many are live now.
    pub fn models(&self) -> Result<Vec<ModelInfo>, StoreError> {
        self.block(|s| async move { s.models().await })
    }

    /// Jobs in the queue per model.
    pub fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        self.block(|s| async move { s.queue_depths().await })
    }
}

impl Inner {
    async fn connect(options: NatsOptions) -> Result<Inner, StoreError> {
        let url = options.url.clone();
        let client = connect_client(&url, &options.client_name).await?;
        let js = jetstream::new(client.clone());
        let ttl = options.file_ttl;
        let work = ensure_stream(
            &js,
            JOBS_STREAM,
            JOBS_SUBJECTS,
            stream::RetentionPolicy::WorkQueue,
            Duration::ZERO,
        )
        .await?;
        ensure_stream(
            &js,
            DEAD_STREAM,
            DEAD_SUBJECTS,
            stream::RetentionPolicy::Limits,
            Duration::ZERO,
        )
        .await?;
        let events = ensure_stream(
            &js,
            EVENTS_STREAM,
            EVENTS_SUBJECTS,
            stream::RetentionPolicy::Limits,
            ttl,
        )
        .await?;
        Ok(Inner {
            jobs: ensure_bucket(&js, "letterpress_jobs", Duration::ZERO).await?,
            idempotency: ensure_bucket(&js, "letterpress_idempotency", Duration::ZERO).await?,
            file_records: ensure_bucket(&js, "letterpress_file_records", ttl).await?,
            files: ensure_object_store(&js, "letterpress_files", ttl).await?,
            models: ensure_bucket(&js, "letterpress_models", Duration::ZERO).await?,
            workers: ensure_bucket(&js, "letterpress_workers", fleet::WORKER_TTL).await?,
            client,
            js,
            work,
            events,
            options,
            consumer: Mutex::default(),
            leases: Mutex::default(),
            cancel_hook: OnceLock::new(),
        })
    }

    fn lease(&self, id: &str) -> Option<Arc<jetstream::message::Acker>> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

/// Connects once, with a timeout: an unreachable server at start is an error, not a retry
/// loop. Later disconnects are retried by the client, for ever.
pub async fn connect_client(url: &str, name: &str) -> Result<async_nats::Client, StoreError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection");
        })
        .connect(url)
        .await
        .map_err(|e| StoreError::Unreachable {
            url: url.into(),
            reason: e.to_string(),
        })
}

/// A file-storage stream, created unless it exists (every process that uses it does this at
/// start; the first one creates it).
pub async fn ensure_stream(
    js: &Context,
    name: &str,
    subjects: &str,
    retention: stream::RetentionPolicy,
    max_age: Duration,
) -> Result<stream::Stream, StoreError> {
    let config = stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        retention,
        storage: stream::StorageType::File,
        max_age,
        allow_direct: true,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.map_err(err(name))
}

/// A key-value bucket, created unless it exists. Created as the stream a bucket is
/// (`KV_<name>` on `$KV.<name>.>`, the layout every NATS client reads): async-nats's own
/// create first reads the account information, which it cannot parse from nats-server 2.9.
async fn ensure_bucket(
    js: &Context,
    name: &str,
    max_age: Duration,
) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.map_err(err(name))?;
    js.get_key_value(name).await.map_err(err(name))
}

async fn ensure_object_store(
    js: &Context,
    name: &str,
    max_age: Duration,
) -> Result<object_store::ObjectStore, StoreError> {
    if let Ok(store) = js.get_object_store(name).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: name.into(),
        max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        Err(e) => js.get_object_store(name).await.map_err(|_| err(name)(&e)),
    }
}

/// A model name as one subject token (`letterpress.jobs.<token>`): NATS reserves `.`, `*`,
/// `>` and whitespace.
pub fn subject_token(model: &str) -> String {
    model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn is_terminal_kind(kind: &str) -> bool {
    TERMINAL_EVENTS.contains(&kind)
}
