//! Job records (compare-and-set on the bucket revision) and the work queue (one message per
//! job, explicit acknowledgement).

use std::sync::Arc;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::message::Acker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Inner, err, subject_token};
use crate::job_error::JobErrorCode;
use crate::store::{CancelRequest, Insert, Job, Status, StoreError, now_ms};

/// A job as the bucket keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    id: String,
    owner: String,
    pub status: String,
    input: Value,
    output: Option<Value>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_ms: i64,
    started_ms: Option<i64>,
    completed_ms: Option<i64>,
    attempts: u32,
    pub cancel_requested: bool,
    model: String,
    request_hash: Option<String>,
    /// Times a worker handed it back at shutdown (redeliveries that are not failures).
    #[serde(default)]
    handbacks: u32,
}

impl Record {
    pub fn into_job(self) -> Job {
        Job {
            id: self.id,
            owner: self.owner,
            status: Status::parse(&self.status),
            input: self.input,
            output: self.output,
            error_code: self.error_code,
            error_message: self.error_message,
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            completed_ms: self.completed_ms,
            attempts: self.attempts,
            model: Some(self.model),
        }
    }

    fn status(&self) -> Status {
        Status::parse(&self.status)
    }

    /// Ends the job: `status`, unless a cancel was requested, which wins.
    fn end(&mut self, status: Status, output: Option<Value>, error: Option<(String, String)>) {
        let (status, output, error) = if self.cancel_requested && status != Status::Canceled {
            (Status::Canceled, None, Some(canceled_by_client()))
        } else {
            (status, output, error)
        };
        self.status = status.as_str().into();
        self.output = output;
        (self.error_code, self.error_message) = error.unzip();
        self.completed_ms = Some(now_ms());
    }
}

/// Tries of recording a job's end, half a second apart (each also waits up to the request
/// timeout while NATS is down): minutes for NATS to come back.
const SETTLE_TRIES: u32 = 120;

fn canceled_by_client() -> (String, String) {
    (
        JobErrorCode::Canceled.as_str().into(),
        "canceled by the client".into(),
    )
}

/// The idempotency bucket's key for an owner's key: hashed, as keys allow few characters.
fn idempotency_key(owner: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{owner}\n{key}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn job_subject(model: &str) -> String {
    format!("letterpress.jobs.{}", subject_token(model))
}

impl Inner {
    /// The job's record and its revision.
    pub(super) async fn record(&self, id: &str) -> Result<Option<(Record, u64)>, StoreError> {
        let entry = self.jobs.entry(id).await.map_err(err("reading a job"))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some((serde_json::from_slice(&e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Changes a record with compare-and-set: `change` answers `None` to leave it as it is.
    /// Answers the record as stored after, `None` for an unknown job.
    pub(super) async fn update(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Record) -> Option<()>,
    ) -> Result<Option<Record>, StoreError> {
        loop {
            let Some((mut record, revision)) = self.record(id).await? else {
                return Ok(None);
            };
            if change(&mut record).is_none() {
                return Ok(Some(record));
            }
            let value = serde_json::to_vec(&record)?.into();
            match self.jobs.update(id, value, revision).await {
                Ok(_) => return Ok(Some(record)),
                // Another node moved it first: read it again and decide again.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(err("updating a job")(e)),
            }
        }
    }

    pub(super) async fn insert_job(
        &self,
        job: Job,
        idempotency: Option<(String, String)>,
        capacity: usize,
    ) -> Result<Insert, StoreError> {
        let Some(model) = job.model.clone().filter(|m| !m.is_empty()) else {
            return Err(StoreError::Nats("no model to queue the job for".into()));
        };
        if let Some((key, _)) = &idempotency {
            let key = idempotency_key(&job.owner, key);
            if let Some(existing) = self
                .idempotency
                .get(&key)
                .await
                .map_err(err("idempotency"))?
            {
                return self
                    .existing(String::from_utf8_lossy(&existing).into())
                    .await;
            }
        }
        let queued = self.work.get_info().await.map_err(err("the job stream"))?;
        let queued = queued.state.messages as usize;
        if queued >= capacity {
            return Ok(Insert::QueueFull { queued });
        }
        let record = Record {
            id: job.id.clone(),
            owner: job.owner.clone(),
            status: Status::Queued.as_str().into(),
            input: job.input.clone(),
            output: None,
            error_code: None,
            error_message: None,
            created_ms: job.created_ms,
            started_ms: None,
            completed_ms: None,
            attempts: 0,
            cancel_requested: false,
            model: model.clone(),
            request_hash: idempotency.as_ref().map(|(_, h)| h.clone()),
            handbacks: 0,
        };
        self.jobs
            .create(&job.id, serde_json::to_vec(&record)?.into())
            .await
            .map_err(err("storing a job"))?;
        if let Some((key, _)) = &idempotency {
            let key = idempotency_key(&job.owner, key);
            match self.idempotency.create(&key, job.id.clone().into()).await {
                Ok(_) => {}
                // Another node took the key between our read and now: its job is the one.
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    let _ = self.jobs.purge(&job.id).await;
                    let id = self
                        .idempotency
                        .get(&key)
                        .await
                        .map_err(err("idempotency"))?;
                    return self
                        .existing(String::from_utf8_lossy(&id.unwrap_or_default()).into())
                        .await;
                }
                Err(e) => {
                    let _ = self.jobs.purge(&job.id).await;
                    return Err(err("idempotency")(e));
                }
            }
        }
        if let Err(e) = self.enqueue(&job.id, &model).await {
            // Not queued: nothing may point at the record, or a retry with the same key would
            // find a job no worker will ever see.
            self.forget(&job, idempotency.as_ref().map(|(k, _)| k.as_str()))
                .await;
            return Err(e);
        }
        Ok(Insert::Created)
    }

    /// Writes the job's first event, before any worker can add one, and its work message.
    async fn enqueue(&self, id: &str, model: &str) -> Result<(), StoreError> {
        if let Some(seq) = self.append_event(id, "queued", &json!({}), false).await? {
            self.publish_live(id, seq, "queued", &json!({})).await;
        }
        // The message id makes a retried publish of the same job a no-op.
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(id.to_string().into())
            .message_id(id);
        self.js
            .send_publish(job_subject(model), publish)
            .await
            .map_err(err("queueing a job"))?
            .await
            .map_err(err("queueing a job"))?;
        Ok(())
    }

    /// Removes a job that could not be queued: its record and, when it holds it, its key.
    async fn forget(&self, job: &Job, key: Option<&str>) {
        let _ = self.jobs.purge(&job.id).await;
        if let Some(key) = key {
            let key = idempotency_key(&job.owner, key);
            let ours = self.idempotency.get(&key).await.ok().flatten();
            if ours.is_some_and(|id| id == job.id.as_bytes()) {
                let _ = self.idempotency.purge(&key).await;
            }
        }
    }

    async fn existing(&self, id: String) -> Result<Insert, StoreError> {
        let hash = self.record(&id).await?.and_then(|(r, _)| r.request_hash);
        Ok(Insert::Existing {
            id,
            request_hash: hash.unwrap_or_default(),
        })
    }

    /// Pulls the next job of the worker's model (waiting up to half a second for one) and
    /// marks it `planning`. Messages of jobs that ended meanwhile are acknowledged and
    /// skipped; a job delivered more often than allowed fails with `interrupted`.
    pub(super) async fn claim_next(&self) -> Result<Option<Job>, StoreError> {
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(consumer) = consumer else {
            return Err(StoreError::Nats("this process serves no model".into()));
        };
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(std::time::Duration::from_millis(500))
            .messages()
            .await
            .map_err(err("pulling a job"))?;
        let Some(message) = batch.next().await else {
            return Ok(None);
        };
        let message = message.map_err(err("pulling a job"))?;
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
        let (message, acker) = message.split();
        let id = String::from_utf8_lossy(&message.payload).to_string();
        self.take(id, delivered, Arc::new(acker)).await
    }

    /// Starts a pulled job: skips (acknowledges) one that ended meanwhile, fails one out of
    /// deliveries, and otherwise marks it `planning` and holds its message.
    async fn take(
        &self,
        id: String,
        delivered: u32,
        acker: Arc<Acker>,
    ) -> Result<Option<Job>, StoreError> {
        let Some((record, _)) = self.record(&id).await? else {
            let _ = acker.ack_with(AckKind::Term).await;
            return Ok(None);
        };
        // Hand-backs at shutdown are redeliveries too, but not failed attempts.
        let attempt = delivered.saturating_sub(record.handbacks).max(1);
        if record.status().is_terminal() {
            // Canceled while queued, or finished by a worker whose acknowledgement was lost.
            let _ = acker.ack().await;
            return Ok(None);
        }
        if attempt > self.options.max_deliveries {
            self.dead_letter(record, attempt).await?;
            let _ = acker.ack_with(AckKind::Term).await;
            return Ok(None);
        }
        let now = now_ms();
        let claimed = self
            .update(&id, |r| {
                // A cancel (or another worker) may have ended it since the read above.
                if r.status().is_terminal() {
                    return None;
                }
                r.status = Status::Planning.as_str().into();
                r.started_ms = Some(now);
                r.attempts = attempt;
                Some(())
            })
            .await?;
        let Some(claimed) = claimed.filter(|c| !c.status().is_terminal()) else {
            let _ = acker.ack().await;
            return Ok(None);
        };
        // A worker that died leaves `attempts` at its own attempt; a hand-back said
        // `requeued` itself.
        if record.attempts > 0 && attempt > record.attempts {
            let reason = format!(
                "the worker running this job stopped; attempt {attempt} of {}",
                self.options.max_deliveries
            );
            let data = json!({ "reason": reason });
            if let Some(seq) = self.append_event(&id, "requeued", &data, false).await? {
                self.publish_live(&id, seq, "requeued", &data).await;
            }
        }
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, acker);
        Ok(Some(claimed.into_job()))
    }

    /// Fails a job that ran out of deliveries and keeps a copy on `letterpress.dead.<model>`.
    async fn dead_letter(&self, record: Record, attempt: u32) -> Result<(), StoreError> {
        let id = record.id.clone();
        let message = format!(
            "the workers running this job stopped {} time(s); it was not retried again",
            attempt - 1
        );
        let code = JobErrorCode::Interrupted.as_str().to_string();
        let ended = self
            .update(&id, |r| {
                if r.status().is_terminal() {
                    return None;
                }
                r.end(Status::Failed, None, Some((code.clone(), message.clone())));
                Some(())
            })
            .await?;
        tracing::warn!(job = %id, attempt, "job failed: out of deliveries");
        let copy = json!({ "job": record, "attempts": attempt, "reason": message });
        let subject = format!("letterpress.dead.{}", subject_token(&record.model));
        self.js
            .publish(subject, serde_json::to_vec(&copy)?.into())
            .await
            .map_err(err("dead-lettering a job"))?
            .await
            .map_err(err("dead-lettering a job"))?;
        if let Some(ended) = ended {
            let job = ended.into_job();
            if let Some((kind, data)) = crate::job_events::terminal_event(&job) {
                if let Some(seq) = self.append_event(&id, kind, &data, true).await? {
                    self.publish_live(&id, seq, kind, &data).await;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn finish(
        &self,
        id: &str,
        status: Status,
        output: Option<Value>,
        error: Option<(String, String)>,
    ) -> Result<Status, StoreError> {
        let record = self
            .settle(id, |r| {
                // Ended already: a worker that lost NATS for longer than the ack wait ran it
                // while another did, and the first outcome stands.
                if r.status().is_terminal() {
                    return None;
                }
                r.end(status, output.clone(), error.clone());
                Some(())
            })
            .await?;
        if let Some(acker) = self.lease(id) {
            let _ = acker.ack().await;
        }
        Ok(record.map_or(status, |r| r.status()))
    }

    /// [`Self::update`] for a job's end, retried while NATS is away (a restart takes
    /// seconds). Given up, the job's lease is dropped unacknowledged, so the job is not kept
    /// "in progress" forever: after the ack wait another worker runs it again.
    async fn settle(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Record) -> Option<()>,
    ) -> Result<Option<Record>, StoreError> {
        let mut tries = 0;
        loop {
            match self.update(id, &mut change).await {
                Ok(record) => return Ok(record),
                Err(e) if tries < SETTLE_TRIES => {
                    tries += 1;
                    tracing::warn!(job = id, error = %e, "recording a job's end; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => {
                    self.lease(id);
                    return Err(e);
                }
            }
        }
    }

    /// Hands the job back (a negative acknowledgement: another worker takes it at once).
    pub(super) async fn requeue(&self, id: &str) -> Result<Status, StoreError> {
        let record = self
            .settle(id, |r| {
                if r.status().is_terminal() {
                    return None;
                }
                if r.cancel_requested {
                    r.end(Status::Canceled, None, Some(canceled_by_client()));
                } else {
                    r.status = Status::Queued.as_str().into();
                    r.started_ms = None;
                    r.handbacks += 1;
                }
                Some(())
            })
            .await?;
        let status = record.map_or(Status::Queued, |r| r.status());
        if let Some(acker) = self.lease(id) {
            let kind = if status == Status::Queued {
                AckKind::Nak(None)
            } else {
                AckKind::Ack
            };
            let _ = acker.ack_with(kind).await;
        }
        Ok(status)
    }

    pub(super) async fn request_cancel(
        &self,
        id: &str,
    ) -> Result<Option<CancelRequest>, StoreError> {
        let mut answer = None;
        let record = self
            .update(id, |r| {
                let status = r.status();
                if status.is_terminal() {
                    answer = Some(CancelRequest::AlreadyEnded(status));
                    return None;
                }
                if status == Status::Queued {
                    answer = Some(CancelRequest::CanceledQueued);
                    let (code, _) = canceled_by_client();
                    let message = "canceled by the client before it started".to_string();
                    r.end(Status::Canceled, None, Some((code, message)));
                } else {
                    answer = Some(CancelRequest::WillStop);
                    r.cancel_requested = true;
                }
                Some(())
            })
            .await?;
        if record.is_none() {
            return Ok(None);
        }
        if answer == Some(CancelRequest::WillStop) {
            // Whichever worker runs it stops between steps.
            // The record says it already (the worker also polls it); a lost message only
            // makes the stop later.
            let sent = self
                .client
                .publish(super::CANCEL_SUBJECT, id.to_string().into());
            if let Err(e) = sent.await {
                tracing::warn!(job = id, error = %e, "sending a cancel");
            }
        }
        Ok(answer)
    }

    /// Counts the records by status (one read per job: for `/metrics`, not a hot path).
    pub(super) async fn counts_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let mut counts: Vec<(Status, u64)> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        let mut keys = match self.jobs.keys().await {
            Ok(k) => k,
            Err(e) => return Err(err("listing jobs")(e)),
        };
        while let Some(key) = keys.next().await {
            let key = key.map_err(err("listing jobs"))?;
            if let Some((record, _)) = self.record(&key).await? {
                let status = record.status();
                if let Some(c) = counts.iter_mut().find(|(s, _)| *s == status) {
                    c.1 += 1;
                }
            }
        }
        Ok(counts)
    }
}
