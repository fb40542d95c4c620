//! An HTTP client of a `letterpress serve` process, for the process-level tests.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Http {
    /// `http://ADDR`.
    pub base: String,
}

impl Http {
    /// Reads the `listening on http://ADDR` line a server prints first.
    pub fn from_first_line(child: &mut Child) -> Http {
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("the server's stdout is piped"))
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Http { base }
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into()
    }

    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut res = Self::agent()
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        let mut body = Vec::new();
        res.body_mut().as_reader().read_to_end(&mut body).unwrap();
        (res.status().as_u16(), body)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    pub fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = Self::agent()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut res = req.send(body.to_string()).unwrap();
        let text = res.body_mut().read_to_string().unwrap();
        (res.status().as_u16(), serde_json::from_str(&text).unwrap())
    }

    /// Server-sent events of a job until the stream ends: (id, event, data).
    pub fn numbered_events(&self, id: &str) -> Vec<(i64, String, Value)> {
        let res = Self::agent()
            .get(format!("{}/v1/generations/{id}/events", self.base))
            .call()
            .unwrap();
        let (mut events, mut seq, mut kind) = (Vec::new(), 0, String::new());
        for line in BufReader::new(res.into_body().into_reader()).lines() {
            let line = line.unwrap();
            if let Some(s) = line.strip_prefix("id:") {
                seq = s.trim().parse().unwrap();
            } else if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                events.push((seq, kind.clone(), serde_json::from_str(d.trim()).unwrap()));
            }
        }
        events
    }

    /// Server-sent events of a job until the stream ends: (event, data).
    pub fn events(&self, id: &str) -> Vec<(String, Value)> {
        let events = self.numbered_events(id).into_iter();
        events.map(|(_, kind, data)| (kind, data)).collect()
    }

    /// Polls until the job is running.
    pub fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.get_json(&format!("/v1/generations/{id}"))["status"] != "running" {
            assert!(Instant::now() < deadline, "job {id} never started");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
