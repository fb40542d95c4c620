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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream::{self, AckKind, consumer, stream};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_ocr::DatasetError;
use letterpress_ocr::dataset::{BuildPlan, BuildProgress, ShardBuild};
use serde::{Deserialize, Serialize};

use super::BuildArgs;

const TASK_STREAM: &str = "LETTERPRESS_DATASET_TASKS";
const DONE_STREAM: &str = "LETTERPRESS_DATASET_DONE";
const WORKERS: &str = "letterpress-dataset-workers";
/// Deliveries of a task that failed before the worker gives up on it and reports the failure
/// to the publisher (a transient error, e.g. a full disk on one machine, gets other tries).
const MAX_ATTEMPTS: i64 = 3;

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

#[derive(Args)]
pub struct WorkerArgs {
    /// NATS server the builds were published to (`nats://host:4222`).
    #[arg(long, value_name = "URL")]
    queue: String,
    /// Threads per shard (0: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Seconds without a sign of life before a task goes to another worker; a worker signals
    /// every third of it while building. Used when the consumer is first created.
    #[arg(
        long,
        hide = true,
        env = "LETTERPRESS_ACK_WAIT_SECS",
        default_value_t = 60
    )]
    ack_wait_secs: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Connects once, with a timeout: an unreachable server at start is an error, not a retry
/// loop. Later disconnects are retried by the client.
async fn connect(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| anyhow!("cannot reach NATS at {url}: {e}"))?;
    Ok(jetstream::new(client))
}

/// The task and completion streams, created when missing.
async fn streams(js: &jetstream::Context) -> Result<(stream::Stream, stream::Stream)> {
    let tasks = js
        .get_or_create_stream(stream::Config {
            name: TASK_STREAM.into(),
            subjects: vec!["letterpress.dataset.tasks.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the dataset task stream")?;
    let done = js
        .get_or_create_stream(stream::Config {
            name: DONE_STREAM.into(),
            subjects: vec!["letterpress.dataset.done.>".into()],
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(7 * 24 * 3600),
            ..Default::default()
        })
        .await
        .context("creating the dataset completion stream")?;
    Ok((tasks, done))
}

/// Publishes `payload` with a message id (deduplicated by the server) and waits for the
/// stream's acknowledgement.
async fn send(js: &jetstream::Context, subject: String, id: &str, payload: Vec<u8>) -> Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(subject, headers, payload.into())
        .await?
        .await?;
    Ok(())
}

/// `dataset build --queue URL`.
pub fn publish(args: &BuildArgs, url: &str) -> Result<()> {
    runtime()?.block_on(async {
        let js = connect(url).await?;
        let config = args.config();
        let plan = tokio::task::block_in_place(|| BuildPlan::new(&config))?;
        let (tasks, mut done) = streams(&js).await?;
        // Failure reports older than this publisher are about earlier attempts.
        let seen_before = done.info().await?.state.last_sequence;
        let mut build = args.clone();
        build.input = std::fs::canonicalize(&args.input)?;
        build.output = std::fs::canonicalize(&args.output)?;
        let run = plan.run_id().to_string();
        let mut complete = BTreeSet::new();
        let (mut queued, mut waiting) = (0, 0);
        for shard in 0..plan.shards() {
            if plan.is_complete(shard) {
                complete.insert(shard);
                continue;
            }
            let subject = task_subject(&run, shard);
            if is_queued(&tasks, &subject).await? {
                // Still queued or being built from an earlier publish: another copy could
                // have two workers write the same shard at once.
                waiting += 1;
                continue;
            }
            let task = Task {
                run: run.clone(),
                shard,
                build: build.clone(),
            };
            // Two publishers started together share the id, so the server keeps one copy;
            // one started after a failure report (which advanced the sequence) queues the
            // failed shard anew rather than being dropped as a duplicate.
            let id = format!("{run}:{shard}:{seen_before}");
            send(&js, subject, &id, serde_json::to_vec(&task)?).await?;
            queued += 1;
        }
        let resumed = complete.len();
        eprintln!(
            "run {run}: {} shards, {resumed} complete, {queued} queued now, {waiting} still queued",
            plan.shards()
        );
        wait_for_shards(&done, &plan, &mut complete, seen_before).await?;
        let report = tokio::task::block_in_place(|| plan.finish(resumed))?;
        super::print_summary(&report, &args.output);
        Ok(())
    })
}

/// Whether the work queue still holds a task with this subject (acked tasks are removed).
async fn is_queued(tasks: &stream::Stream, subject: &str) -> Result<bool> {
    match tasks.get_last_raw_message_by_subject(subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(anyhow!("looking up the queued task {subject}: {e}")),
    }
}

/// Shows the job's progress until every shard is complete. Completions come from the
/// workers' announcements; the folder is the truth (an announcement of a shard no longer
/// there, e.g. from before the folder was emptied, is ignored), and it is also rescanned
/// whenever the announcements go quiet.
async fn wait_for_shards(
    done: &stream::Stream,
    plan: &BuildPlan,
    complete: &mut BTreeSet<usize>,
    seen_before: u64,
) -> Result<()> {
    let shards = plan.shards();
    let bar = ProgressBar::new(shards as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} shards {elapsed_precise} {msg}",
    )?);
    bar.set_position(complete.len() as u64);
    let mut messages = follow(done, plan.run_id()).await?;
    while complete.len() < shards {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        match next {
            Ok(Some(Ok(message))) => {
                let sequence = message.info().map_or(u64::MAX, |i| i.stream_sequence);
                let Ok(report) = serde_json::from_slice::<Done>(&message.payload) else {
                    tracing::warn!("ignoring an unreadable completion message");
                    continue;
                };
                if plan.is_complete(report.shard) {
                    complete.insert(report.shard);
                } else if let Some(error) = report.error.filter(|_| sequence > seen_before) {
                    bar.abandon();
                    bail!(
                        "shard {} failed: {error}; run the same command again to retry it",
                        report.shard
                    );
                }
            }
            Ok(Some(Err(e))) => {
                tracing::warn!("completion stream: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(None) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                messages = follow(done, plan.run_id()).await?;
            }
            Err(_quiet) => complete.extend((0..shards).filter(|s| plan.is_complete(*s))),
        }
        bar.set_position(complete.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The run's completion announcements, from the first.
async fn follow(done: &stream::Stream, run: &str) -> Result<consumer::pull::Ordered> {
    let consumer = done
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: done_subject(run),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("following the completion stream")?;
    Ok(consumer.messages().await?)
}

/// Cancels a shard build on SIGTERM or Ctrl-C.
struct Cancel(Arc<AtomicBool>);

impl BuildProgress for Cancel {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `dataset worker --queue URL`.
pub fn work(args: &WorkerArgs) -> Result<()> {
    runtime()?.block_on(async {
        let js = connect(&args.queue).await?;
        let (tasks, _) = streams(&js).await?;
        let consumer: consumer::PullConsumer = tasks
            .get_or_create_consumer(
                WORKERS,
                consumer::pull::Config {
                    durable_name: Some(WORKERS.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(args.ack_wait_secs.max(1)),
                    ..Default::default()
                },
            )
            .await
            .context("creating the workers' consumer")?;
        let stop = Arc::new(AtomicBool::new(false));
        tokio::spawn(stop_on_signal(stop.clone()));
        let mut worker = Worker {
            js,
            jobs: args.jobs,
            heartbeat: Duration::from_secs((args.ack_wait_secs / 3).max(1)),
            stop,
            plan: None,
        };
        tracing::info!("waiting for dataset shards on {}", args.queue);
        while !worker.stop.load(Ordering::Relaxed) {
            // One task at a time, asked for only when idle: a prefetched task would wait,
            // unacknowledged, behind the shard being built.
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await;
            let message = match batch {
                Ok(mut batch) => batch.next().await,
                Err(e) => Some(Err(e.into())),
            };
            match message {
                Some(Ok(message)) => worker.handle(message).await,
                Some(Err(e)) => {
                    tracing::warn!("taking a task: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => {}
            }
        }
        // Whatever acks are still buffered go out before the process ends.
        if let Err(e) = worker.js.client().flush().await {
            tracing::warn!("flushing the last acks: {e}");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn stop_on_signal(stop: Arc<AtomicBool>) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: the current shard is abandoned and handed back");
    stop.store(true, Ordering::Relaxed);
}

struct Worker {
    js: jetstream::Context,
    jobs: usize,
    heartbeat: Duration,
    stop: Arc<AtomicBool>,
    /// The last run's plan: the inputs are enumerated once per run, not once per shard.
    plan: Option<Arc<BuildPlan>>,
}

impl Worker {
    async fn handle(&mut self, message: jetstream::Message) {
        let task: Task = match serde_json::from_slice(&message.payload) {
            Ok(task) => task,
            Err(e) => {
                tracing::warn!("dropping an unreadable task: {e}");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let attempt = message.info().map_or(1, |i| i.delivered);
        tracing::info!(
            "run {}: building shard {} (delivery {attempt})",
            task.run,
            task.shard
        );
        let result = self.build(&task, &message).await;
        match result {
            Ok(built) => self.announce_and_ack(&task, &built, &message).await,
            Err(e) if is_cancelled(&e) => {
                // Confirmed by the server: the process exits next, and an unsent nak would
                // leave the shard waiting for the ack wait.
                if let Err(e) = message.double_ack_with(AckKind::Nak(None)).await {
                    tracing::warn!("handing back shard {}: {e}", task.shard);
                }
            }
            Err(e) if attempt >= MAX_ATTEMPTS => {
                tracing::error!("run {}: shard {} failed: {e:#}", task.run, task.shard);
                let report = Done {
                    shard: task.shard,
                    error: Some(format!("{e:#}")),
                };
                let id = format!("{}:{}:failed:{attempt}", task.run, task.shard);
                let payload = serde_json::to_vec(&report).unwrap_or_default();
                if let Err(e) = send(&self.js, done_subject(&task.run), &id, payload).await {
                    tracing::warn!("reporting the failure: {e}");
                }
                let _ = message.ack_with(AckKind::Term).await;
            }
            Err(e) => {
                tracing::warn!(
                    "run {}: shard {} failed (delivery {attempt}, will retry): {e:#}",
                    task.run,
                    task.shard
                );
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
            }
        }
    }

    /// Builds the task's shard on a blocking thread, telling the server every heartbeat that
    /// the task is still in progress.
    async fn build(&mut self, task: &Task, message: &jetstream::Message) -> Result<ShardBuild> {
        let cached = self.plan.take().filter(|p| p.run_id() == task.run);
        let mut config = task.build.config();
        config.jobs = self.jobs;
        let cancel = Cancel(self.stop.clone());
        let shard = task.shard;
        let job = tokio::task::spawn_blocking(move || {
            let plan = match cached {
                Some(plan) => plan,
                None => Arc::new(BuildPlan::new(&config)?),
            };
            let built = plan.build_shard(shard, &cancel)?;
            Ok::<_, DatasetError>((plan, built))
        });
        tokio::pin!(job);
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.tick().await;
        let joined = loop {
            tokio::select! {
                joined = &mut job => break joined,
                _ = heartbeat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!("telling the server the shard is in progress: {e}");
                    }
                }
            }
        };
        let (plan, built) = joined.context("the shard's build thread")??;
        self.plan = Some(plan);
        Ok(built)
    }

    /// Announces the complete shard, then acks the task. Until the ack the task may be
    /// delivered again; the shard is then found complete and only announced again (the
    /// message id makes that a duplicate the server drops).
    async fn announce_and_ack(
        &self,
        task: &Task,
        built: &ShardBuild,
        message: &jetstream::Message,
    ) {
        let report = Done {
            shard: task.shard,
            error: None,
        };
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        let id = format!("{}:{}:done", task.run, task.shard);
        let mut announced = false;
        for _ in 0..10 {
            match send(&self.js, done_subject(&task.run), &id, payload.clone()).await {
                Ok(()) => {
                    announced = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!("announcing shard {}: {e}", task.shard);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if !announced {
            // Not acked: the redelivery finds the shard complete and announces it.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        if let Err(e) = message.double_ack().await {
            tracing::warn!(
                "acking shard {}: {e} (a redelivery will find it complete)",
                task.shard
            );
        }
        tracing::info!(
            "run {}: shard {} {} (kept {}, errors {})",
            task.run,
            task.shard,
            if built.already_complete {
                "was complete"
            } else {
                "done"
            },
            built.stats.kept,
            built.stats.errors
        );
    }
}

fn is_cancelled(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<DatasetError>(),
        Some(DatasetError::Cancelled)
    )
}
