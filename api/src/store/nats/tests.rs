//! The JetStream store against a real `nats-server -js` (the harness the process tests use):
//! what two API nodes racing on one job, one key or one event stream must never break.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{NatsOptions, NatsStore};
use crate::store::{CancelRequest, Insert, Job, Status};

#[path = "../../../../tests/common/nats.rs"]
#[allow(dead_code)]
mod harness;

fn connect(url: &str) -> NatsStore {
    NatsStore::connect(NatsOptions {
        url: url.into(),
        client_name: "store test".into(),
        file_ttl: Duration::from_secs(3600),
        ack_wait: Duration::from_secs(3),
        max_deliveries: 2,
    })
    .unwrap()
}

fn job(id: &str) -> Job {
    let mut job = Job::queued(id.into(), "anonymous".into(), json!({"prompt": "x"}));
    job.model = Some("m".into());
    job
}

#[test]
fn two_nodes_racing_keep_one_job_per_key_and_one_number_per_event() {
    let server = harness::NatsServer::start("store-race");
    let nodes = [
        Arc::new(connect(&server.url())),
        Arc::new(connect(&server.url())),
    ];

    // One Idempotency-Key from both nodes at once: one job.
    let inserts: Vec<Insert> = std::thread::scope(|scope| {
        let racers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                scope.spawn(move || {
                    let id = format!("gen_{i}");
                    node.insert_job(&job(&id), Some(("key", "hash")), 100)
                        .unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let created = inserts
        .iter()
        .filter(|i| matches!(i, Insert::Created))
        .count();
    assert_eq!(created, 1);
    let existing: Vec<&String> = inserts
        .iter()
        .filter_map(|i| match i {
            Insert::Existing { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(existing.len(), 1);
    let winner = existing[0].clone();
    assert!(nodes[0].job(&winner).unwrap().is_some());

    // Both nodes appending to one job's events: numbered 1.. without a gap or a repeat
    // (the insert wrote `queued` as 1).
    std::thread::scope(|scope| {
        for node in &nodes {
            let winner = &winner;
            scope.spawn(move || {
                for _ in 0..15 {
                    node.add_event(winner, "step", &json!({})).unwrap();
                }
            });
        }
    });
    let seqs: Vec<i64> = nodes[1]
        .events_after(&winner, 0)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<_>>());
    assert_eq!(nodes[0].events_after(&winner, 29).unwrap().len(), 2);

    // A terminal event is added once however many nodes find it missing.
    let added = nodes
        .iter()
        .filter_map(|n| {
            n.add_terminal_event_if_missing(&winner, "canceled", &json!({}))
                .unwrap()
        })
        .count();
    assert_eq!(added, 1);
}

#[test]
fn the_first_outcome_stands_and_cancels_answer_how_the_job_ends() {
    let server = harness::NatsServer::start("store-outcome");
    let store = connect(&server.url());
    store.insert_job(&job("gen_a"), None, 100).unwrap();
    store.set_status("gen_a", Status::Running).unwrap();
    let output = json!({"images": []});
    let first = store.finish("gen_a", Status::Succeeded, Some(&output), None);
    assert_eq!(first.unwrap(), Status::Succeeded);
    // A second worker that ran it too (its first lost NATS past the ack wait) changes nothing.
    let error = Some(("generation_failed", "late"));
    let second = store.finish("gen_a", Status::Failed, None, error).unwrap();
    assert_eq!(second, Status::Succeeded);
    assert_eq!(store.job("gen_a").unwrap().unwrap().output, Some(output));

    store.insert_job(&job("gen_b"), None, 100).unwrap();
    let cancel = store.request_cancel("gen_b").unwrap();
    assert_eq!(cancel, Some(CancelRequest::CanceledQueued));
    let again = store.request_cancel("gen_b").unwrap();
    assert_eq!(again, Some(CancelRequest::AlreadyEnded(Status::Canceled)));
    assert_eq!(store.request_cancel("gen_none").unwrap(), None);

    // A running job asked to cancel ends canceled whatever it reports.
    store.insert_job(&job("gen_c"), None, 100).unwrap();
    store.set_status("gen_c", Status::Running).unwrap();
    let cancel = store.request_cancel("gen_c").unwrap();
    assert_eq!(cancel, Some(CancelRequest::WillStop));
    assert!(store.is_cancel_requested("gen_c").unwrap());
    let ended = store.finish("gen_c", Status::Succeeded, Some(&json!({})), None);
    assert_eq!(ended.unwrap(), Status::Canceled);
    let record = store.job("gen_c").unwrap().unwrap();
    assert_eq!(record.error_code.as_deref(), Some("canceled"));
}

#[test]
fn hand_backs_are_not_failed_attempts_and_ended_jobs_are_skipped() {
    let server = harness::NatsServer::start("store-handback");
    let store = connect(&server.url());
    let model = super::ModelInfo {
        model: "m".into(),
        schedulers: vec!["ddim".into()],
        workers: 0,
    };
    store.serve_model(&model, "worker_test").unwrap();
    let claim = || {
        (0..20)
            .find_map(|_| store.claim_next().unwrap())
            .expect("a job to claim")
    };

    // Handed back at shutdown three times (more than the 2 deliveries allowed): still runs.
    store.insert_job(&job("gen_h"), None, 100).unwrap();
    for _ in 0..3 {
        assert_eq!(claim().attempts, 1);
        assert_eq!(store.requeue("gen_h").unwrap(), Status::Queued);
    }
    let job_h = claim();
    assert_eq!((job_h.id.as_str(), job_h.attempts), ("gen_h", 1));
    store
        .finish("gen_h", Status::Succeeded, None, None)
        .unwrap();
    let kinds: Vec<String> = store
        .events_after("gen_h", 0)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(!kinds.contains(&"requeued".to_string()), "{kinds:?}");

    // Canceled while queued: its message is acknowledged and skipped, never run.
    store.insert_job(&job("gen_x"), None, 100).unwrap();
    store.request_cancel("gen_x").unwrap();
    store.insert_job(&job("gen_y"), None, 100).unwrap();
    assert_eq!(claim().id, "gen_y");
    assert_eq!(
        store.job("gen_x").unwrap().unwrap().status,
        Status::Canceled
    );
}
