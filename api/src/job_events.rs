//! A job's events: each is stored (so late listeners and restarts replay it) and then
//! broadcast to live listeners. Every way a job can end writes its terminal event
//! (`succeeded`, `failed`, `canceled`), so every event stream ends: the worker's outcomes,
//! a cancel before the start, and start-up recovery after a crash or kill.

use serde_json::{Value, json};

use crate::hub::LiveEvent;
use crate::state::AppState;
use crate::store::{Job, Recovered, Status};

/// Stores an event and broadcasts it (with `live_extra` merged in, e.g. a preview too large
/// to store).
pub fn emit(
    state: &AppState,
    job_id: &str,
    kind: &str,
    data: Value,
    live_extra: Option<(&str, Value)>,
) {
    let seq = match state.store.add_event(job_id, kind, &data) {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(job = job_id, error = %e, "storing an event");
            return;
        }
    };
    let mut data = data;
    if let (Some((k, v)), Value::Object(map)) = (live_extra, &mut data) {
        map.insert(k.to_string(), v);
    }
    publish(state, job_id, seq, kind, data);
}

fn publish(state: &AppState, job_id: &str, seq: i64, kind: &str, data: Value) {
    let event = LiveEvent {
        seq,
        kind: kind.to_string(),
        data,
    };
    // A scaled-out service sends it through NATS, and every node's subscription (this one's
    // too) hands it to that node's hub.
    match state.store.nats() {
        Some(nats) => nats.publish_live(job_id, event.seq, &event.kind, &event.data),
        None => state.hub.publish(job_id, event),
    }
}

/// The terminal event of an ended job, from its record; `None` while it has not ended.
pub fn terminal_event(job: &Job) -> Option<(&'static str, Value)> {
    Some(match job.status {
        Status::Succeeded => ("succeeded", json!({ "output": job.output })),
        Status::Failed => (
            "failed",
            json!({ "error": { "code": job.error_code, "message": job.error_message } }),
        ),
        Status::Canceled => ("canceled", json!({})),
        _ => return None,
    })
}

/// Emits the terminal event of a job that has just ended, read back from the store (the
/// status it ended in may differ from the worker's outcome: a requested cancel wins).
pub fn emit_end(state: &AppState, job_id: &str) {
    match state.store.job(job_id) {
        // Only if missing: a stream that saw the ended record first may have written it
        // already, and a job has one terminal event.
        Ok(Some(job)) => {
            add_missing_end(state, &job);
        }
        Ok(None) => tracing::error!(job = job_id, "an ended job vanished"),
        Err(e) => tracing::error!(job = job_id, error = %e, "reading an ended job"),
    }
}

/// Adds the terminal event to an ended job that lacks one (a database from an older version,
/// or an event that failed to store) and broadcasts it. True when it was added now.
pub fn add_missing_end(state: &AppState, job: &Job) -> bool {
    let Some((kind, data)) = terminal_event(job) else {
        return false;
    };
    match state
        .store
        .add_terminal_event_if_missing(&job.id, kind, &data)
    {
        Ok(Some(seq)) => {
            publish(state, &job.id, seq, kind, data);
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "storing a terminal event");
            false
        }
    }
}

/// The events of the jobs start-up recovery moved: `requeued` for those that run again,
/// the terminal event for those that ended.
pub fn emit_recovered(state: &AppState, recovered: &Recovered) {
    for id in &recovered.requeued {
        let reason = "the server stopped (crash or kill) while the job ran; it runs again";
        emit(state, id, "requeued", json!({ "reason": reason }), None);
    }
    let ended = recovered.failed.iter().map(|(id, _)| id);
    for id in ended.chain(&recovered.canceled) {
        emit_end(state, id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::settings::Settings;
    use crate::state::Shared;
    use crate::store::{Insert, Store};

    fn job(id: &str) -> Job {
        Job::queued(id.into(), "anonymous".into(), json!({"prompt": "p"}))
    }

    /// The kinds of a job's event stream, which must end by itself within 10 s.
    async fn stream_kinds(state: &AppState, id: &str) -> Vec<String> {
        stream_kinds_after(state, id, 0).await
    }

    /// The same, resuming after event `after` (`Last-Event-ID`).
    async fn stream_kinds_after(state: &AppState, id: &str, after: i64) -> Vec<String> {
        let req = Request::get(format!("/v1/generations/{id}/events"))
            .header("last-event-id", after.to_string())
            .body(Body::empty())
            .unwrap();
        let res = crate::routes::app(state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
            .await
            .expect("the event stream never ended")
            .unwrap()
            .to_bytes();
        String::from_utf8_lossy(&body)
            .lines()
            .filter_map(|l| l.strip_prefix("event:"))
            .map(|k| k.trim().to_string())
            .collect()
    }

    /// A process killed twice while a job ran (SIGKILL: no clean requeue): the restarts
    /// write `requeued`, then `failed` with `interrupted`, and the stream ends there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_interrupted_by_kills_ends_its_stream() {
        let dir = std::env::temp_dir().join(format!("lp-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Settings {
            data_dir: dir.clone(),
            ..Settings::default()
        };
        let id = "gen_0123456789abcdef0123456789abcdef";
        {
            let store = Store::open(&dir).unwrap();
            assert!(matches!(
                store.insert_job(&job(id), None, 8).unwrap(),
                Insert::Created
            ));
            store.add_event(id, "queued", &json!({})).unwrap();
            store.claim_next().unwrap().unwrap(); // running when the first kill comes
        }
        let state = Shared::new(settings.clone()).unwrap();
        // Runs again, and is killed again.
        assert_eq!(state.store.claim_next().unwrap().unwrap().attempts, 2);
        drop(state);
        let state = Shared::new(settings).unwrap();
        let kinds = stream_kinds(&state, id).await;
        assert_eq!(kinds, ["queued", "requeued", "failed"]);
        let job = state.store.job(id).unwrap().unwrap();
        assert_eq!(job.error_code.as_deref(), Some("interrupted"));
    }

    /// A job that ended with no terminal event stored (written by an older version) still
    /// ends its stream, with the event made from its record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ended_job_without_its_event_ends_the_stream() {
        let dir = std::env::temp_dir().join(format!("lp-noend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = Shared::new(Settings {
            data_dir: dir,
            ..Settings::default()
        })
        .unwrap();
        let id = "gen_00000000000000000000000000000001";
        state.store.insert_job(&job(id), None, 8).unwrap();
        state.store.add_event(id, "queued", &json!({})).unwrap();
        state.store.claim_next().unwrap();
        let error = Some(("timeout", "too slow"));
        state.store.finish(id, Status::Failed, None, error).unwrap();
        assert_eq!(stream_kinds(&state, id).await, ["queued", "failed"]);
        // Stored now: a second listener replays it; one resuming after it gets nothing more.
        assert_eq!(stream_kinds(&state, id).await, ["queued", "failed"]);
        assert!(stream_kinds_after(&state, id, 2).await.is_empty());
        // The worker's end, coming after a stream wrote the event, adds no second one.
        emit_end(&state, id);
        let kinds: Vec<String> = state
            .store
            .events_after(id, 0)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["queued", "failed"]);
    }
}
