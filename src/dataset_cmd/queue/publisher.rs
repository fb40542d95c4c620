//! The publishing side: plan, queue the incomplete shards, follow the completions.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_ocr::dataset::BuildPlan;

use super::{Done, Task, connect, done_subject, runtime, send, streams, task_subject};
use crate::dataset_cmd::BuildArgs;

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
        crate::dataset_cmd::print_summary(&report, &args.output);
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
    let mut messages = Some(follow(done, plan.run_id()).await?);
    while complete.len() < shards {
        let Some(following) = &mut messages else {
            // Followed again once the server answers; the folder is rescanned meanwhile.
            tokio::time::sleep(Duration::from_secs(1)).await;
            complete.extend((0..shards).filter(|s| plan.is_complete(*s)));
            bar.set_position(complete.len() as u64);
            messages = follow(done, plan.run_id())
                .await
                .inspect_err(|e| tracing::warn!("{e:#}"))
                .ok();
            continue;
        };
        let next = tokio::time::timeout(Duration::from_secs(5), following.next()).await;
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
                messages = None;
            }
            Ok(None) => messages = None,
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
