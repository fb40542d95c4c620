//! The worker: take one task at a time, build its shard, announce it, ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::{self, AckKind, consumer};
use clap::Args;
use futures_util::StreamExt;
use letterpress_ocr::DatasetError;
use letterpress_ocr::dataset::{BuildPlan, BuildProgress, ShardBuild};

use super::{Done, Task, connect, done_subject, runtime, send, streams};

/// The part of a task a worker of any version can read.
#[derive(serde::Deserialize)]
struct TaskId {
    run: String,
    shard: usize,
}

const WORKERS: &str = "letterpress-dataset-workers";
/// Deliveries of a task that failed before the worker gives up on it and reports the failure
/// to the publisher (a transient error, e.g. a full disk on one machine, gets other tries).
const MAX_ATTEMPTS: i64 = 3;

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
        let (stop_tx, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(stop_on_signal(stop.clone(), stop_tx));
        let mut worker = Worker {
            js,
            jobs: args.jobs,
            heartbeat: Duration::from_secs((args.ack_wait_secs / 3).max(1)),
            stop,
            plan: None,
        };
        tracing::info!("waiting for dataset shards on {}", args.queue);
        loop {
            let message = tokio::select! {
                Ok(_) = stopped.wait_for(|stop| *stop) => break,
                message = next_task(&consumer) => message,
            };
            match message {
                Ok(Some(message)) => worker.handle(message).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("taking a task: {e:#}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if worker.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        // Whatever acks are still buffered go out before the process ends (unless the
        // server is away: the tasks then come back after the ack wait).
        let client = worker.js.client();
        match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("flushing the last acks: {e}"),
            Err(_) => tracing::warn!("flushing the last acks: no answer from the server"),
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// The next task, if one comes within a few seconds. One task at a time, asked for only
/// when idle: a prefetched task would wait, unacknowledged, behind the shard being built.
/// Bounded also while the server is away (the pull request's expiry comes from the server).
async fn next_task(consumer: &consumer::PullConsumer) -> Result<Option<jetstream::Message>> {
    let request = async {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages()
            .await?;
        batch.next().await.transpose().map_err(|e| anyhow!("{e}"))
    };
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(message) => message,
        Err(_) => Err(anyhow!("no answer from the server in 5 s")),
    }
}

async fn stop_on_signal(stop: Arc<AtomicBool>, stopped: tokio::sync::watch::Sender<bool>) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        // Without the handler the worker runs until killed; the sender must live on, or
        // the main loop would read its end as a stop.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: the current shard is abandoned and handed back");
    stop.store(true, Ordering::Relaxed);
    let _ = stopped.send(true);
    // Kept open so that the main loop sees the stop, not a closed channel.
    std::future::pending::<()>().await;
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
                // E.g. from a publisher of another version: its run and shard, when they can
                // be read, let the publisher report the failure instead of waiting forever.
                let error = format!("unreadable task: {e}");
                tracing::error!("{error}");
                match serde_json::from_slice::<TaskId>(&message.payload) {
                    Ok(id) => self.give_up(&id.run, id.shard, error, &message).await,
                    Err(_) => drop(message.ack_with(AckKind::Term).await),
                }
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
                self.give_up(&task.run, task.shard, format!("{e:#}"), &message)
                    .await;
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

    /// Reports the shard as failed to the publisher and removes its task from the queue.
    async fn give_up(&self, run: &str, shard: usize, error: String, message: &jetstream::Message) {
        let attempt = message.info().map_or(1, |i| i.delivered);
        let report = Done {
            shard,
            error: Some(error),
        };
        let id = format!("{run}:{shard}:failed:{attempt}");
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        if let Err(e) = send(&self.js, done_subject(run), &id, payload).await {
            tracing::warn!("reporting the failure: {e}");
        }
        let _ = message.ack_with(AckKind::Term).await;
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
        if let Err(e) = send(&self.js, done_subject(&task.run), &id, payload).await {
            // Not acked: the redelivery finds the shard complete and announces it.
            tracing::warn!("announcing shard {}: {e:#}", task.shard);
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
