//! A scaled-out service as real processes (docs/scaling-out.md): a `nats-server -js` the
//! test starts, API nodes (`serve --queue`) and workers (`worker --queue`) with the tiny
//! fixture ControlNet pipeline. Jobs survive a worker killed while it denoises and a NATS
//! server killed and restarted; any node streams any job's events.

#[path = "common/http.rs"]
mod http;
#[path = "common/nats.rs"]
mod nats;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Http;
use nats::NatsServer;
use serde_json::{Value, json};

const MODEL: &str = "diffusion/tests/fixtures/pipeline/sd1-controlnet";
/// Short, so that a killed worker's job goes to another within the test's patience.
const ACK_WAIT_SECS: &str = "3";

struct Process {
    child: Child,
    /// An API node's address; unused for a worker.
    http: Http,
}

impl std::ops::Deref for Process {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Process {
    fn api_node(nats: &NatsServer) -> Process {
        let mut child = letterpress(&["serve", "--bind", "127.0.0.1:0", "--queue", &nats.url()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting an API node");
        let http = Http::from_first_line(&mut child);
        Process { child, http }
    }

    fn worker(nats: &NatsServer) -> Process {
        let child = letterpress(&["worker", "--queue", &nats.url(), "--model-dir", MODEL])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting a worker");
        Process {
            child,
            http: Http {
                base: String::new(),
            },
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; answers whether it exited cleanly within a minute.
    fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The kinds of the job's events stored so far (the stream is left once they are read).
    fn events_so_far(&self, id: &str) -> Vec<String> {
        let res = Http::agent()
            .get(format!("{}/v1/generations/{id}/events", self.base))
            .config()
            .timeout_global(Some(Duration::from_millis(500)))
            .build()
            .call();
        let Ok(res) = res else { return Vec::new() };
        let mut kinds = Vec::new();
        for line in BufReader::new(res.into_body().into_reader()).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("event:") {
                kinds.push(k.trim().to_string());
            }
        }
        kinds
    }

    /// Waits until the node sees `workers` live workers and knows their model.
    fn wait_for_workers(&self, workers: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // 503 until a worker registered the model.
            let ready: Value = serde_json::from_slice(&self.get("/readyz").1).unwrap();
            let live: u64 = ready["queue"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|q| q["workers"].as_u64())
                .sum();
            if live >= workers && ready["generation"]["available"] == true {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workers never registered: {ready}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls the job until it ends; answers it.
    fn wait_ended(&self, id: &str, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let job = self.get_json(&format!("/v1/generations/{id}"));
            if ["succeeded", "failed", "canceled"].contains(&job["status"].as_str().unwrap()) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {job}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn letterpress(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_letterpress"));
    command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .env("LETTERPRESS_LOG", "warn")
        .env("LETTERPRESS_QUEUE_ACK_WAIT_SECS", ACK_WAIT_SECS)
        .env("LETTERPRESS_QUEUE_CAPACITY", "64")
        .env("LETTERPRESS_RATE_LIMIT_PER_MINUTE", "0")
        .env("LETTERPRESS_SHUTDOWN_GRACE_SECS", "1")
        // Two workers share the test machine's cores.
        .env("OMP_NUM_THREADS", "1")
        .stderr(Stdio::inherit());
    command
}

/// A job that denoises long enough (about a second) for a kill to land mid-way.
fn request(seed: u64) -> Value {
    json!({"prompt": format!("a poster that says 'JOB{seed}'"), "width": 64, "height": 64,
           "steps": 60, "seed": seed})
}

fn file_path(url: &Value) -> String {
    let url = url.as_str().unwrap();
    url[url.find("/v1/").unwrap()..].to_string()
}

#[test]
fn two_nodes_two_workers_one_killed_every_job_succeeds_once() {
    let nats = NatsServer::start("cluster");
    let nodes = [Process::api_node(&nats), Process::api_node(&nats)];
    let mut workers = [Process::worker(&nats), Process::worker(&nats)];
    nodes.iter().for_each(|n| n.wait_for_workers(2));

    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, job) = nodes[i % 2].post("/v1/generations", request(i as u64), &[]);
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // The first job's events, live, from the node it was not submitted to.
    let first = ids[0].clone();
    let streamed = std::thread::scope(|scope| {
        let live = scope.spawn(|| nodes[1].numbered_events(&first));
        // Kill one worker the moment two jobs are under way at once, so each worker holds one.
        let deadline = Instant::now() + Duration::from_secs(120);
        let under_way = |id: &String| {
            let status = nodes[0].get_json(&format!("/v1/generations/{id}"))["status"].clone();
            ["planning", "rendering", "running"].contains(&status.as_str().unwrap())
        };
        while ids.iter().filter(|id| under_way(id)).count() < 2 {
            assert!(Instant::now() < deadline, "two jobs never ran at once");
        }
        workers[0].kill();
        live.join().unwrap()
    });
    let seqs: Vec<i64> = streamed.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "{streamed:?}"
    );
    assert_eq!(streamed.first().unwrap().1, "queued");
    assert_eq!(streamed.last().unwrap().1, "succeeded");
    assert!(streamed.iter().any(|(_, k, _)| k == "step"));

    let mut redelivered = 0;
    for (i, id) in ids.iter().enumerate() {
        // Asked of the node it was not submitted to.
        let other = &nodes[(i + 1) % 2];
        let job = other.wait_ended(id, Duration::from_secs(300));
        assert_eq!(job["status"], "succeeded", "{job}");
        let events = other.numbered_events(id);
        assert_eq!(events.last().unwrap().1, "succeeded", "{events:?}");
        if events.iter().any(|(_, k, _)| k == "requeued") {
            redelivered += 1;
        }
        let images = job["output"]["images"].as_array().unwrap();
        assert_eq!(images.len(), 1);
        let (status, png) = other.get(&file_path(&images[0]["url"]));
        assert_eq!(status, 200);
        assert!(png.starts_with(b"\x89PNG"));
    }
    // The killed worker held a job, which another worker ran again.
    assert!(redelivered >= 1, "no job was redelivered after the kill");
    // Exactly one image per job exists in the store, whoever painted it.
    let images = image_records(&nats.url());
    for id in &ids {
        let n = images.iter().filter(|job| *job == id).count();
        assert_eq!(n, 1, "job {id} has {n} stored images");
    }
}

/// Runs `f` with a JetStream client of the test's server, to look at what the service stored.
fn with_jetstream<T>(url: &str, f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        f(async_nats::jetstream::new(client)).await
    })
}

/// The job id of every stored image record (read straight from the file-record bucket).
fn image_records(url: &str) -> Vec<String> {
    with_jetstream(url, async |js| {
        use futures_util::StreamExt;
        let records = js.get_key_value("letterpress_file_records").await.unwrap();
        let mut keys = records.keys().await.unwrap();
        let mut jobs = Vec::new();
        while let Some(key) = keys.next().await {
            let value = records.get(key.unwrap()).await.unwrap().unwrap();
            let record: Value = serde_json::from_slice(&value).unwrap();
            if record["kind"] == "image" {
                jobs.push(record["job_id"].as_str().unwrap().to_string());
            }
        }
        jobs
    })
}

#[test]
fn a_nats_restart_mid_run_loses_nothing() {
    let mut nats = NatsServer::start("restart");
    let node = Process::api_node(&nats);
    let _worker = Process::worker(&nats);
    node.wait_for_workers(1);
    let ids: Vec<String> = (0..6)
        .map(|i| {
            let (status, job) = node.post("/v1/generations", request(100 + i), &[]);
            assert_eq!(status, 201, "{job}");
            job["id"].as_str().unwrap().to_string()
        })
        .collect();
    node.wait_ended(&ids[0], Duration::from_secs(120));
    nats.kill();
    std::thread::sleep(Duration::from_secs(1));
    nats.restart();
    for id in &ids {
        let job = node.wait_ended(id, Duration::from_secs(300));
        assert_eq!(job["status"], "succeeded", "{job}");
    }
}

#[test]
fn cancel_reaches_the_worker_sigterm_hands_the_job_back_and_keys_hold_across_nodes() {
    let nats = NatsServer::start("cancel");
    let nodes = [Process::api_node(&nats), Process::api_node(&nats)];
    let mut worker = Process::worker(&nats);
    nodes.iter().for_each(|n| n.wait_for_workers(1));
    let long = json!({"prompt": "'LONG'", "width": 128, "height": 128, "steps": 150, "seed": 1});

    // Canceled on the node it was not submitted to, while a worker denoises it.
    let (_, job) = nodes[0].post("/v1/generations", long.clone(), &[]);
    let id = job["id"].as_str().unwrap().to_string();
    nodes[1].wait_running(&id);
    let (status, _) = nodes[1].post(&format!("/v1/generations/{id}/cancel"), json!({}), &[]);
    assert_eq!(status, 200);
    let job = nodes[0].wait_ended(&id, Duration::from_secs(60));
    assert_eq!(job["status"], "canceled", "{job}");

    // SIGTERM with a short grace: the running job goes back to the queue, the worker exits
    // cleanly, and the next worker runs it.
    let (_, job) = nodes[1].post("/v1/generations", long.clone(), &[]);
    let id = job["id"].as_str().unwrap().to_string();
    nodes[0].wait_running(&id);
    assert!(
        worker.terminate(),
        "the worker did not exit cleanly on SIGTERM"
    );
    let job = nodes[0].get_json(&format!("/v1/generations/{id}"));
    assert_eq!(job["status"], "queued", "{job}");
    let _next = Process::worker(&nats);
    let job = nodes[1].wait_ended(&id, Duration::from_secs(300));
    assert_eq!(job["status"], "succeeded", "{job}");
    let kinds: Vec<String> = nodes[0].events(&id).into_iter().map(|e| e.0).collect();
    assert!(kinds.contains(&"requeued".to_string()), "{kinds:?}");

    // One Idempotency-Key, two nodes: one job.
    let key = [("idempotency-key", "same-poster")];
    let body = json!({"prompt": "'ONCE'", "width": 64, "height": 64, "steps": 2, "seed": 3});
    let (first, a) = nodes[0].post("/v1/generations", body.clone(), &key);
    let (second, b) = nodes[1].post("/v1/generations", body, &key);
    assert_eq!((first, second), (201, 200), "{a} {b}");
    assert_eq!(a["id"], b["id"]);
}

#[test]
fn a_job_whose_workers_die_twice_fails_interrupted_with_a_dead_letter() {
    let nats = NatsServer::start("dead");
    let node = Process::api_node(&nats);
    let long = json!({"prompt": "'LONG'", "width": 128, "height": 128, "steps": 150, "seed": 2});
    let mut worker = Process::worker(&nats);
    node.wait_for_workers(1);
    let (_, job) = node.post("/v1/generations", long, &[]);
    let id = job["id"].as_str().unwrap().to_string();
    node.wait_running(&id);
    worker.kill();
    let mut worker = Process::worker(&nats);
    // Its second delivery, after the ack wait.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running_again(&node, &id) {
        assert!(
            Instant::now() < deadline,
            "job {id} was not delivered again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.kill();
    let _last = Process::worker(&nats);
    let job = node.wait_ended(&id, Duration::from_secs(120));
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "interrupted", "{job}");
    let kinds: Vec<String> = node.events(&id).into_iter().map(|e| e.0).collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("failed"),
        "{kinds:?}"
    );
    assert_eq!(stream_messages(&nats.url(), "LETTERPRESS_DEAD"), 1);
}

/// Running after a `requeued` event: the job's second delivery has started.
fn running_again(node: &Process, id: &str) -> bool {
    node.get_json(&format!("/v1/generations/{id}"))["status"] == "running"
        && node.events_so_far(id).iter().any(|k| k == "requeued")
}

fn stream_messages(url: &str, stream: &str) -> u64 {
    with_jetstream(url, async |js| {
        let mut stream = js.get_stream(stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    })
}

#[test]
fn an_unreachable_nats_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    for args in [
        vec!["serve", "--bind", "127.0.0.1:0", "--queue", &url],
        vec!["worker", "--queue", &url, "--model-dir", MODEL],
    ] {
        let out = letterpress(&args).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("cannot reach NATS at"),
            "{args:?}: {stderr}"
        );
    }
}
