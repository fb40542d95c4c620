//! `letterpress dataset build --queue` with `dataset worker` processes over a real
//! nats-server: two workers, one SIGKILLed mid-shard and the server restarted mid-run, must
//! give the same counts and the same shard bytes as the single-process build.

#[path = "common/dataset_inputs.rs"]
mod dataset_inputs;
#[path = "common/nats.rs"]
mod nats;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nats::NatsServer;
use serde_json::Value;

const SHARD_SIZE: &str = "40";

fn letterpress() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_letterpress"));
    c.env("NO_COLOR", "1");
    c
}

fn build_cmd(input: &Path, out: &Path) -> Command {
    let mut c = letterpress();
    c.args(["dataset", "build"])
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--shard-size", SHARD_SIZE, "--jobs", "1"]);
    c
}

/// `dataset build --queue`, its progress and summary on `stderr`, its result on a pipe.
fn publish(input: &Path, out: &Path, url: &str, stderr: Stdio) -> Child {
    build_cmd(input, out)
        .args(["--queue", url])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// A worker logging (info) to `log`; the queue gives a silent worker's task to another after
/// `ack_wait` seconds (the first worker to start sets it).
fn worker(url: &str, log: &Path, ack_wait: u32) -> Child {
    letterpress()
        .args(["dataset", "worker", "--queue", url, "--jobs", "1"])
        .env("LETTERPRESS_ACK_WAIT_SECS", ack_wait.to_string())
        .env("LETTERPRESS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn names_in(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| pred(n))
                .collect()
        })
        .unwrap_or_default()
}

/// A shard's tar members, name → bytes.
fn members(tar: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        assert!(out.insert(name.clone(), bytes).is_none(), "{name} twice");
    }
    out
}

/// The summary's count lines (`kept: …`, `rejected: …`, `errors: N`), without the output path.
fn counts(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| {
            l.starts_with("kept:") || l.starts_with("rejected:") || l.starts_with("errors:")
        })
        .map(|l| l.split(" (see ").next().unwrap().to_string())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the publisher, killing it after `limit` (a lost task would make it wait forever).
fn finish(mut publisher: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while publisher.try_wait().unwrap().is_none() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let timed_out = publisher.try_wait().unwrap().is_none();
    let _ = publisher.kill();
    let output = publisher.wait_with_output().unwrap();
    assert!(
        !timed_out,
        "the publisher did not finish in {limit:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn two_workers_one_killed_and_a_server_restart_match_the_single_process_build() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dataset-queue");
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("in");
    let n = 240;
    assert_eq!(dataset_inputs::write_posters(&input, n), 6);

    let started = Instant::now();
    let reference = dir.join("reference");
    let local = build_cmd(&input, &reference).output().unwrap();
    assert!(local.status.success(), "{local:?}");
    let local_stdout = String::from_utf8_lossy(&local.stdout).into_owned();
    eprintln!(
        "single-process build: {:?}\n{local_stdout}",
        started.elapsed()
    );

    let mut server = NatsServer::start("dataset-queue");
    let out = dir.join("out");
    let started = Instant::now();
    let publisher = publish(&input, &out, &server.url(), Stdio::piped());
    let logs = [dir.join("worker-a.log"), dir.join("worker-b.log")];
    let mut workers = Killed(vec![
        worker(&server.url(), &logs[0], 3),
        worker(&server.url(), &logs[1], 3),
    ]);

    // Worker a is killed mid-shard (its shard's partial files written, not yet renamed),
    // after some shard is complete.
    let held = |log: &str| {
        let shard = log.rsplit("building shard ").next()?.split(' ').next()?;
        shard.parse::<usize>().ok()
    };
    let mut killed = 0;
    wait_for("worker a mid-shard", Duration::from_secs(60), || {
        let Some(shard) = held(&read(&logs[0])) else {
            return false;
        };
        killed = shard;
        !names_in(&out, |n| n.ends_with("_stats.json")).is_empty()
            && out.join(format!(".{shard:05}.tar.partial")).exists()
            && !out.join(format!("{shard:05}_stats.json")).exists()
    });
    workers.0[0].kill().unwrap();
    workers.0[0].wait().unwrap();
    // Rarely, the shard is finished between the look and the kill.
    let finished_anyway = out.join(format!("{killed:05}_stats.json")).exists();
    eprintln!(
        "worker a killed in shard {killed} after {:?}{}",
        started.elapsed(),
        if finished_anyway {
            " (it had just finished it)"
        } else {
            ""
        }
    );

    // The server goes away and comes back on the same store while worker b builds.
    // Down for 2 s while worker b builds and the publisher waits.
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();

    let output = finish(publisher, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let log_b = read(&logs[1]);
    eprintln!(
        "queued build: {:?}\n{stdout}{stderr}\nworker b:\n{log_b}",
        started.elapsed()
    );
    assert!(output.status.success(), "{stderr}");
    // The killed worker's shard went to worker b, which rebuilt it over the stale partials.
    // (Usually as delivery 2; the server's SIGKILL may lose the delivery count, never the task.)
    let rebuilt = log_b
        .rsplit_once(&format!("building shard {killed} ("))
        .is_some_and(|(_, after)| after.contains(&format!("shard {killed} done (")));
    assert!(rebuilt || finished_anyway, "{log_b}");

    assert_eq!(counts(&stdout), counts(&local_stdout));
    assert_eq!(counts(&stdout).len(), 3, "{stdout}");
    assert!(stdout.contains("errors: 6 "), "{stdout}");

    // The same shard files, byte for byte, and the same merged errors and stats.
    let shards = n.div_ceil(40);
    let mut keys = BTreeSet::new();
    for shard in 0..shards {
        let tar = format!("{shard:05}.tar");
        let ours = members(&out.join(&tar));
        assert_eq!(ours, members(&reference.join(&tar)), "{tar}");
        for suffix in [".jsonl", "_errors.jsonl", "_stats.json"] {
            let name = format!("{shard:05}{suffix}");
            assert_eq!(
                read(&out.join(&name)),
                read(&reference.join(&name)),
                "{name}"
            );
        }
        for line in read(&out.join(format!("{shard:05}.jsonl"))).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            assert!(keys.insert(key.clone()), "key {key} in two shards");
        }
    }
    assert_eq!(keys.len(), n, "every input once");
    for name in ["errors.jsonl", "stats.json"] {
        assert_eq!(read(&out.join(name)), read(&reference.join(name)), "{name}");
    }
    assert_eq!(read(&out.join("errors.jsonl")).lines().count(), 6);
    let partial = names_in(&out, |n| n.ends_with(".partial"));
    assert!(partial.is_empty(), "{partial:?}");
}

#[test]
fn a_worker_stopped_with_sigterm_hands_its_shard_back_at_once() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dataset-queue-sigterm");
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("in");
    dataset_inputs::write_posters(&input, 80);
    let mut server = NatsServer::start("dataset-queue-sigterm");
    let out = dir.join("out");
    let publisher = publish(&input, &out, &server.url(), Stdio::piped());
    let logs = [dir.join("worker-a.log"), dir.join("worker-b.log")];
    // An ack wait far longer than the test: only the handing back can finish the build.
    let mut workers = Killed(vec![worker(&server.url(), &logs[0], 600)]);
    wait_for("worker a building", Duration::from_secs(60), || {
        read(&logs[0]).contains("building shard")
    });
    let stopped = sigterm(&mut workers.0[0]);
    assert!(stopped.success(), "{stopped:?}: {}", read(&logs[0]));
    assert!(read(&logs[0]).contains("handed back"), "{}", read(&logs[0]));

    let started = Instant::now();
    workers.0.push(worker(&server.url(), &logs[1], 600));
    let output = finish(publisher, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "handed back and built by worker b in {:?}",
        started.elapsed()
    );
    assert!(stdout.contains("errors: 2 "), "{stdout}");
    assert!(
        read(&logs[1]).contains("(delivery 2)"),
        "{}",
        read(&logs[1])
    );

    // An idle worker whose server went away still stops at once.
    server.kill();
    let stopped = sigterm(&mut workers.0[1]);
    assert!(stopped.success(), "{stopped:?}: {}", read(&logs[1]));
}

/// SIGTERM, then the exit status, which must come within 15 s.
fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no exit 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rerun_publisher_queues_nothing_twice_and_a_failing_shard_fails_the_build() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dataset-queue-rerun");
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("in");
    dataset_inputs::write_posters(&input, 80);
    let server = NatsServer::start("dataset-queue-rerun");
    let out = dir.join("out");
    let publish = |log: &Path| {
        publish(
            &input,
            &out,
            &server.url(),
            std::fs::File::create(log).unwrap().into(),
        )
    };
    let logs = [dir.join("publisher-1.log"), dir.join("publisher-2.log")];
    // No worker yet: the first publisher queues both shards and is killed while it waits.
    let mut first = publish(&logs[0]);
    wait_for("the tasks queued", Duration::from_secs(30), || {
        read(&logs[0]).contains("queued now")
    });
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        read(&logs[0]).contains("2 queued now, 0 still queued"),
        "{}",
        read(&logs[0])
    );
    let second = publish(&logs[1]);
    wait_for("the second publisher", Duration::from_secs(30), || {
        read(&logs[1]).contains("queued now")
    });
    assert!(
        read(&logs[1]).contains("0 queued now, 2 still queued"),
        "{}",
        read(&logs[1])
    );
    // The folder's manifest no longer matches the tasks' settings: every delivery fails, and
    // after the last one the publisher reports the shard and exits non-zero.
    let manifest = read(&out.join("run.json"));
    let other = manifest.replace("\"shard_size\": 40", "\"shard_size\": 41");
    std::fs::write(out.join("run.json"), other).unwrap();
    let log = dir.join("worker.log");
    let failing = Killed(vec![worker(&server.url(), &log, 3)]);
    let second = finish(second, Duration::from_secs(60));
    let stderr = read(&logs[1]);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed: ") && stderr.contains("other settings or inputs"),
        "{stderr}"
    );
    assert!(read(&log).contains("(delivery 3)"), "{}", read(&log));

    // With the manifest put back, running the same command again queues the failed shard
    // anew (no duplicate-id drop) and the build completes.
    drop(failing);
    std::fs::write(out.join("run.json"), manifest).unwrap();
    let logs = [dir.join("publisher-3.log"), dir.join("worker-2.log")];
    let third = publish(&logs[0]);
    let _worker = Killed(vec![worker(&server.url(), &logs[1], 3)]);
    let third = finish(third, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(third.status.success(), "{}", read(&logs[0]));
    assert!(stdout.contains("errors: 2 "), "{stdout}");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dataset-queue-unreachable");
    let _ = std::fs::remove_dir_all(&dir);
    dataset_inputs::write_posters(&dir.join("in"), 2);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let publish = build_cmd(&dir.join("in"), &dir.join("out"))
        .args(["--queue", &url])
        .output();
    let work = letterpress()
        .args(["dataset", "worker", "--queue", &url])
        .output();
    // Connection refused: one try each, no retry loop.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    for (what, output) in [("build --queue", publish), ("worker", work)] {
        let output = output.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("error: cannot reach NATS at {url}: ")),
            "{what}: {stderr}"
        );
    }
    assert!(
        !dir.join("out").join("run.json").exists(),
        "nothing is written before the server answers"
    );
}
