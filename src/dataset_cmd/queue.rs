//! `dataset build --queue` and `dataset worker`: one build spread over machines through NATS
//! JetStream.
//!
//! The publisher plans the build as a local one does (run manifest, complete shards skipped)
//! and publishes one task per incomplete shard to a work-queue stream; workers take tasks
//! from one durable pull consumer, build the shard with the library's single-shard build
//! (same keys, bytes, `.partial` files and rename as a local build), announce it on a
//! completion stream and only then ack. A worker killed mid-shard never acks: the task is
//! redelivered after the ack wait and the shard rebuilt from scratch; one killed after the
//! rename but before the ack finds the shard complete and only announces it again. Both
//! streams use file storage, so a restarted server loses nothing, and the publisher counts
//! completions from the stream (and the folder), so it can be restarted too.

mod publisher;
mod worker;

use std::time::Duration;

use anyhow::{Result, anyhow};
use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};

use super::BuildArgs;

pub use publisher::publish;
pub use worker::{WorkerArgs, work};

const TASK_STREAM: &str = "LETTERPRESS_DATASET_TASKS";
const DONE_STREAM: &str = "LETTERPRESS_DATASET_DONE";

fn task_subject(run: &str, shard: usize) -> String {
    format!("letterpress.dataset.tasks.{run}.{shard}")
}

fn done_subject(run: &str) -> String {
    format!("letterpress.dataset.done.{run}")
}

/// One shard to build; the settings travel with it so a worker needs nothing else.
#[derive(Serialize, Deserialize)]
struct Task {
    run: String,
    shard: usize,
    build: BuildArgs,
}

/// A worker's announcement on the completion stream.
#[derive(Serialize, Deserialize)]
struct Done {
    shard: usize,
    /// Set when the worker gave up on the shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Connects once, as the service does: an unreachable server at start is an error.
async fn connect(url: &str) -> Result<jetstream::Context> {
    let client = letterpress_api::connect_nats(url, "letterpress dataset").await?;
    Ok(jetstream::new(client))
}

/// The task and completion streams, created when missing.
async fn streams(js: &jetstream::Context) -> Result<(stream::Stream, stream::Stream)> {
    let tasks = letterpress_api::ensure_stream(
        js,
        TASK_STREAM,
        "letterpress.dataset.tasks.>",
        stream::RetentionPolicy::WorkQueue,
        Duration::ZERO,
    )
    .await?;
    let done = letterpress_api::ensure_stream(
        js,
        DONE_STREAM,
        "letterpress.dataset.done.>",
        stream::RetentionPolicy::Limits,
        Duration::from_secs(7 * 24 * 3600),
    )
    .await?;
    Ok((tasks, done))
}

/// Publishes `payload` with a message id (deduplicated by the server, so a retry after a
/// lost acknowledgement stores it once) and waits for the stream's acknowledgement, retrying
/// for about a minute while the server is away (a restart).
async fn send(js: &jetstream::Context, subject: String, id: &str, payload: Vec<u8>) -> Result<()> {
    let mut tries = 0;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let stored = async {
            js.publish_with_headers(subject.clone(), headers, payload.clone().into())
                .await?
                .await
        };
        match stored.await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 10 => {
                tracing::warn!("publishing to {subject}: {e} (retrying)");
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(anyhow!("publishing to {subject}: {e}")),
        }
    }
}
