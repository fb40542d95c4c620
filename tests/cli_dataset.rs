//! `letterpress dataset build` as a process: killed with SIGKILL at a random moment and run
//! again (twice), it must end with every input exactly once across kept, rejected and errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

#[path = "common/dataset_inputs.rs"]
mod dataset_inputs;

fn build_cmd(input: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_letterpress"));
    c.args(["dataset", "build"])
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--shard-size", "16", "--jobs", "2", "--export", "planner"]);
    c
}

#[test]
fn sigkill_at_a_random_moment_then_rerun_gives_every_input_exactly_once() {
    let dir = std::env::temp_dir().join(format!("letterpress-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("in");
    let n = 240;
    // Some inputs are broken: they must be counted once too, as errors.
    assert_eq!(dataset_inputs::write_posters(&input, n), 6);
    let out = dir.join("out");

    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for attempt in 0..2 {
        let delay = Duration::from_millis(rng.random_range(300..7000));
        let mut child = build_cmd(&input, &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut finished = false;
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let complete = std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with("_stats.json"))
                    .count()
            })
            .unwrap_or(0);
        eprintln!(
            "seed {seed}: run {attempt} killed after {delay:?}{}; {complete} of {} shards complete",
            if finished {
                " (had already finished)"
            } else {
                ""
            },
            n.div_ceil(16)
        );
    }
    let output = build_cmd(&input, &out).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("final run:\n{stdout}");

    // Every input exactly once in the shard indexes.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut tar_keys = Vec::new();
    for shard in 0..n.div_ceil(16) {
        let index = std::fs::read_to_string(out.join(format!("{shard:05}.jsonl"))).unwrap();
        for line in index.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let source = v["source"].as_str().unwrap().to_string();
            let status = v["status"].as_str().unwrap().to_string();
            assert!(
                seen.insert(source.clone(), status).is_none(),
                "{source} twice"
            );
        }
        let mut archive =
            tar::Archive::new(std::fs::File::open(out.join(format!("{shard:05}.tar"))).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json") {
                let mut json = String::new();
                entry.read_to_string(&mut json).unwrap();
                let v: Value = serde_json::from_str(&json).unwrap();
                tar_keys.push((key.to_string(), v["source"].as_str().unwrap().to_string()));
            }
        }
    }
    assert_eq!(seen.len(), n, "every input once");
    let count = |s: &str| seen.values().filter(|v| *v == s).count();
    let (kept, rejected, errors) = (count("kept"), count("rejected"), count("error"));
    eprintln!("inputs {n}: kept {kept}, rejected {rejected}, errors {errors}");
    assert_eq!(kept + rejected + errors, n);
    assert_eq!(errors, 6);
    assert!(kept > n / 2, "rendered posters are kept: {kept}");
    // The shards hold each kept sample once, and nothing else.
    let mut sources: Vec<&String> = tar_keys.iter().map(|(_, s)| s).collect();
    sources.sort();
    sources.dedup();
    assert_eq!((tar_keys.len(), sources.len()), (kept, kept));
    let error_lines = std::fs::read_to_string(out.join("errors.jsonl")).unwrap();
    assert_eq!(error_lines.lines().count(), errors);
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["seen"], n);
    assert_eq!(stats["kept"], kept);
    let planner: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("planner.json")).unwrap()).unwrap();
    assert_eq!(
        planner.as_array().unwrap().len(),
        0,
        "no captions, no planner data"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(stdout.contains(&format!("kept: {kept}")), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
