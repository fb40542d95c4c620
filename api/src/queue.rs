//! What a node of a scaled-out service (`queue_url`) does beyond the single-process one: hand
//! live events and cancels from NATS to this process, and decide which model an API node
//! queues jobs for (docs/scaling-out.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::engine::EngineInfo;
use crate::hub::LiveEvent;
use crate::schema::ModelQueue;
use crate::state::{AppState, ModelState, Shared};
use crate::store::nats::{ModelInfo, NatsStore, QueueDepth, subject_token};

/// The model a worker serves under when nothing names one: its own name is a folder's, and
/// the embedded model's folder name changes with its weights.
pub const EMBEDDED_MODEL: &str = "embedded";

/// Live events from any node go to this node's hub; a cancel for a job this process runs
/// sets its stop flag (the worker checks it between steps).
pub(crate) fn forward_to(state: &AppState, nats: &NatsStore) {
    let weak: Weak<Shared> = Arc::downgrade(state);
    nats.on_live_events(move |job, seq, kind, data| {
        if let Some(state) = weak.upgrade() {
            state.hub.publish(job, LiveEvent { seq, kind, data });
        }
    });
    let weak: Weak<Shared> = Arc::downgrade(state);
    nats.on_cancels(move |job| {
        let Some(state) = weak.upgrade() else { return };
        let flags = state.cancel_flags.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flag) = flags.get(job) {
            tracing::info!(job, "cancel requested");
            flag.store(true, Ordering::Relaxed);
        }
    });
}

/// The model an API node queues for: the configured one, else the one model workers have
/// registered, else (several) one with live workers. Its schedulers are the registered ones;
/// unregistered, any name passes here and its worker decides. `None` while nothing is
/// configured or registered: a job queued for a guessed model could wait forever.
pub fn choose_model(configured: Option<&str>, registered: &[ModelInfo]) -> Option<EngineInfo> {
    let chosen = match configured {
        Some(name) => registered
            .iter()
            .find(|m| m.model == name)
            .cloned()
            .unwrap_or_else(|| unregistered(name)),
        None => match registered {
            [] => return None,
            [only] => only.clone(),
            several => several
                .iter()
                .find(|m| m.workers > 0)
                .unwrap_or(&several[0])
                .clone(),
        },
    };
    Some(EngineInfo {
        model: chosen.model,
        schedulers: chosen.schedulers,
    })
}

fn unregistered(name: &str) -> ModelInfo {
    ModelInfo {
        model: name.into(),
        schedulers: Vec::new(),
        workers: 0,
    }
}

/// Keeps an API node's model state and queue snapshot current with the registry and the
/// job stream, every two seconds.
pub async fn watch_models(state: AppState) {
    let warned = AtomicBool::new(false);
    state.set_model_state(ModelState::AwaitingWorker);
    *state.queues.write().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let s = state.clone();
        let read = tokio::task::spawn_blocking(move || {
            let nats = s.store.nats()?;
            Some(nats.models().and_then(|m| Ok((m, nats.queue_depths()?))))
        });
        let (registered, depths) = match read.await {
            Ok(Some(Ok(read))) => read,
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "reading the model registry and the queue");
                continue;
            }
            _ => continue,
        };
        let configured = state.settings.queue_model.as_deref();
        if configured.is_none() && registered.len() > 1 && !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                models = registered.len(),
                "workers hold several models; set queue_model to choose which this node queues for"
            );
        }
        state.set_model_state(match choose_model(configured, &registered) {
            Some(info) => ModelState::Ready(info),
            None => ModelState::AwaitingWorker,
        });
        *state.queues.write().unwrap_or_else(|e| e.into_inner()) =
            Some(model_queues(&registered, depths));
    }
}

/// Per model: jobs in the queue and live workers. Models with jobs but no registration
/// (nobody ever served them) are listed too.
fn model_queues(registered: &[ModelInfo], depths: Vec<QueueDepth>) -> Vec<ModelQueue> {
    let mut queues: Vec<ModelQueue> = registered
        .iter()
        .map(|m| ModelQueue {
            model: m.model.clone(),
            jobs: 0,
            workers: m.workers,
        })
        .collect();
    for depth in depths {
        match queues
            .iter_mut()
            .find(|q| subject_token(&q.model) == depth.model)
        {
            Some(q) => q.jobs = depth.jobs,
            None => queues.push(ModelQueue {
                model: depth.model,
                jobs: depth.jobs,
                workers: 0,
            }),
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, workers: usize) -> ModelInfo {
        ModelInfo {
            model: name.into(),
            schedulers: vec!["ddim".into()],
            workers,
        }
    }

    #[test]
    fn the_configured_model_wins_then_the_only_one_then_a_live_one() {
        let pick = |c: Option<&str>, r: &[ModelInfo]| choose_model(c, r).map(|i| i.model);
        assert_eq!(pick(None, &[]), None);
        assert_eq!(pick(None, &[model("sd15", 0)]).as_deref(), Some("sd15"));
        assert_eq!(
            pick(None, &[model("a", 0), model("b", 2)]).as_deref(),
            Some("b")
        );
        assert_eq!(
            pick(Some("b"), &[model("a", 1), model("b", 0)]).as_deref(),
            Some("b")
        );
        let unknown = choose_model(Some("c"), &[model("a", 1)]).unwrap();
        assert_eq!((unknown.model.as_str(), unknown.schedulers.len()), ("c", 0));
        assert_eq!(
            choose_model(None, &[model("a", 1)]).unwrap().schedulers,
            ["ddim"]
        );
    }
}
