//! Which models workers hold: each worker registers its model (kept) and announces itself
//! (expiring unless renewed), so API nodes know what to validate requests against and
//! `/readyz` and `/metrics` can show queue depth per model.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Inner, err, subject_token};
use crate::store::{StoreError, now_ms};

/// A worker's announcement expires this long after its last renewal.
pub(super) const WORKER_TTL: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// A model as workers registered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub model: String,
    /// Scheduler names; the first is the default.
    pub schedulers: Vec<String>,
    /// Workers holding it now (filled in when listed).
    #[serde(default)]
    pub workers: usize,
}

/// Jobs waiting (or running, not yet acknowledged) for one model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueDepth {
    /// The model's subject token.
    pub model: String,
    pub jobs: u64,
}

#[derive(Serialize, Deserialize)]
struct Announcement {
    model: String,
    since_ms: i64,
}

impl Inner {
    pub(super) async fn serve_model(
        self: std::sync::Arc<Self>,
        info: ModelInfo,
        worker_id: String,
    ) -> Result<(), StoreError> {
        let token = subject_token(&info.model);
        let registered = ModelInfo {
            workers: 0,
            ..info.clone()
        };
        self.models
            .put(&token, serde_json::to_vec(&registered)?.into())
            .await
            .map_err(err("registering the model"))?;
        let config = pull::Config {
            durable_name: Some(format!("workers_{token}")),
            filter_subject: format!("letterpress.jobs.{token}"),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            // Deliveries are counted by the worker, which fails the job and keeps a copy
            // (the server would only drop it).
            max_deliver: -1,
            ..Default::default()
        };
        let consumer = self
            .work
            .get_or_create_consumer(&format!("workers_{token}"), config)
            .await
            .map_err(err("opening the job consumer"))?;
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(consumer);
        let announcement = Announcement {
            model: info.model.clone(),
            since_ms: now_ms(),
        };
        let announcement = serde_json::to_vec(&announcement)?;
        let inner = self.clone();
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(RENEW_EVERY);
            loop {
                renew.tick().await;
                let key = format!("{token}.{worker_id}");
                if let Err(e) = inner.workers.put(&key, announcement.clone().into()).await {
                    tracing::warn!(error = %e, "announcing the worker");
                }
            }
        });
        tokio::spawn(self.clone().keep_leases());
        Ok(())
    }

    /// Tells the server every running job is still in progress, so its ack wait restarts
    /// while the worker denoises; a killed worker stops telling, and the job goes to another.
    /// Each job's record is read too: a cancel whose message this process missed (it was
    /// reconnecting) still stops the job.
    async fn keep_leases(self: std::sync::Arc<Self>) {
        let period = (self.options.ack_wait / 3).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let leases: Vec<_> = self
                .leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(id, acker)| (id.clone(), acker.clone()))
                .collect();
            for (id, acker) in leases {
                let _ = acker.ack_with(AckKind::Progress).await;
                let canceled = self.record(&id).await.ok().flatten();
                if canceled.is_some_and(|(r, _)| r.cancel_requested)
                    && let Some(hook) = self.cancel_hook.get()
                {
                    hook(&id);
                }
            }
        }
    }

    pub(super) async fn models(&self) -> Result<Vec<ModelInfo>, StoreError> {
        let mut live: std::collections::HashMap<String, usize> = Default::default();
        if let Ok(mut keys) = self.workers.keys().await {
            while let Some(Ok(key)) = keys.next().await {
                let token = key.split('.').next().unwrap_or_default().to_string();
                *live.entry(token).or_default() += 1;
            }
        }
        let mut models = Vec::new();
        let mut keys = self.models.keys().await.map_err(err("listing models"))?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(err("listing models"))?;
            let Some(value) = self
                .models
                .get(&key)
                .await
                .map_err(err("reading a model"))?
            else {
                continue;
            };
            let mut info: ModelInfo = serde_json::from_slice(&value)?;
            info.workers = live.get(&key).copied().unwrap_or(0);
            models.push(info);
        }
        models.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(models)
    }

    pub(super) async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let mut info = self
            .work
            .info_with_subjects(super::JOBS_SUBJECTS)
            .await
            .map_err(err("the job stream"))?;
        let mut depths = Vec::new();
        while let Some(entry) = info.next().await {
            let (subject, jobs) = entry.map_err(err("the job stream"))?;
            let model = subject.trim_start_matches("letterpress.jobs.").to_string();
            depths.push(QueueDepth {
                model,
                jobs: jobs as u64,
            });
        }
        depths.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(depths)
    }
}
