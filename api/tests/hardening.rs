//! What a hostile user found (issue 20), one test per finding, through the router: abandoned
//! synchronous jobs are canceled and one job's cost is capped, requests are validated before a
//! job exists, invisible keywords are refused, a cancel answers the state the job ends in, and
//! every error is the JSON error object. Stream ends after restarts are tested in the crate
//! (`job_events`) and with a real process (`tests/serve_process.rs`); slow clients in
//! `connections.rs`.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use letterpress_api::{AppState, sha256_hex};
use serde_json::{Value, json};

/// `letterpress_jobs{status="…"}` from `/metrics`.
async fn jobs_with_status(state: &AppState, status: &str) -> u64 {
    let text = String::from_utf8(get(state, "/metrics").await.body).unwrap();
    let name = format!("letterpress_jobs{{status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// Polls until no job is queued or running and `status` has `count` jobs.
async fn settle(state: &AppState, status: &str, count: u64) {
    for _ in 0..500 {
        let busy =
            jobs_with_status(state, "queued").await + jobs_with_status(state, "running").await;
        if busy == 0 && jobs_with_status(state, status).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("jobs did not settle with {count} {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_synchronous_job_is_canceled() {
    let mut s = settings("abandon");
    s.openai_wait_secs = 1;
    let state = with_engine(s, Duration::from_millis(50));
    let slow = json!({"prompt": "'SLOW'", "size": "256x256", "steps": 100});
    // The wait runs out: the answer says the job was canceled, and it was.
    let r = post(&state, "/v1/images/generations", slow.clone()).await;
    let (code, message, _) = r.error(StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(code, "timeout");
    assert!(message.contains("was canceled"), "{message}");
    let id = message
        .split_whitespace()
        .find(|w| w.starts_with("gen_"))
        .unwrap();
    // It stops at its next step; its event stream ends there.
    let events = sse_events(
        &get(&state, &format!("/v1/generations/{id}/events"))
            .await
            .body,
    );
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("canceled"));
    let steps = events.iter().filter(|e| e.0 == "step").count();
    assert!(steps < 100, "stopped early: {steps} steps");

    // The client goes away (its request future is dropped, as hyper does on disconnect).
    let mut s = settings("abandon-drop");
    s.openai_wait_secs = 600;
    let state = with_engine(s, Duration::from_millis(50));
    let gone = tokio::time::timeout(
        Duration::from_millis(500),
        post(&state, "/v1/images/generations", slow),
    )
    .await;
    assert!(gone.is_err(), "the job should still be running");
    settle(&state, "canceled", 1).await;
    assert_eq!(jobs_with_status(&state, "succeeded").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_cannot_cost_more_than_the_pixel_steps_budget() {
    // The default on a CPU: 512×512 at 30 steps.
    let state = with_engine(settings("budget"), Duration::ZERO);
    let big = json!({"prompt": "p", "width": 2048, "height": 2048, "steps": 20});
    let (code, message, _) = post(&state, "/v1/generations", big)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(code, "job_too_large");
    assert!(message.contains("at most 7864320"), "{message}");
    let big = json!({"prompt": "p", "size": "2048x2048"});
    let (code, ..) = post(&state, "/v1/images/generations", big)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(code, "job_too_large");
    assert_eq!(jobs_with_status(&state, "queued").await, 0);
    // An operator's own budget, and a GPU's default, let it through.
    for (device, budget) in [("cpu", Some(2048 * 2048 * 20)), ("cuda", None)] {
        let mut s = settings(&format!("budget-{device}"));
        (s.device, s.max_pixel_steps) = (device.into(), budget);
        let state = plain_on(s);
        let big = json!({"prompt": "p", "width": 2048, "height": 2048, "steps": 20});
        // No model here: accepted input gets as far as the 503.
        let (code, ..) = post(&state, "/v1/generations", big)
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code, "model_not_loaded", "{device}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_are_validated_before_a_job_exists() {
    let state = with_engine(settings("door"), Duration::ZERO);
    let line = |bbox: Value| json!({"text": "SALE", "bbox": bbox});
    let long = "x".repeat(250);
    let cases = [
        // An inverted box, as /v1/render refuses it.
        (
            json!({"prompt": "p", "width": 64, "height": 64,
                   "layout": {"width": 64, "height": 64, "lines": [line(json!([40, 40, 10, 10]))]}}),
            "layout.lines[0].bbox",
            "zero or negative size",
        ),
        // A box that fitting the 512² layout to the 64² output makes empty: the box sent is named.
        (
            json!({"prompt": "p", "width": 64, "height": 64,
                   "layout": {"width": 512, "height": 512, "lines": [line(json!([0, 0, 3, 100]))]}}),
            "layout.lines[0].bbox",
            "the box sent, [0, 0, 3, 100], on the layout's 512x512 canvas",
        ),
        // A quoted keyword over 200 characters.
        (
            json!({"prompt": format!("a poster that says \"{long}\""), "width": 64, "height": 64}),
            "prompt",
            "250 characters",
        ),
        // A line no font can draw at all.
        (
            json!({"prompt": "p", "width": 64, "height": 64, "layout": {"width": 64, "height": 64,
                   "lines": [{"text": "SALE", "bbox": [0, 0, 64, 64], "font": "No Such Family"}]}}),
            "layout.lines[0].font",
            "not installed on this server",
        ),
    ];
    for (body, param, words) in cases {
        let r = post(&state, "/v1/generations", body.clone()).await;
        let (_, message, p) = r.error(StatusCode::BAD_REQUEST);
        assert_eq!(p.as_deref(), Some(param), "{body}: {message}");
        assert!(message.contains(words), "{body}: {message}");
        assert!(
            !message.contains("path"),
            "fonts are families only: {message}"
        );
    }
    let r = post(
        &state,
        "/v1/images/generations",
        json!({"prompt": format!("a poster that says \"{long}\""), "size": "256x256"}),
    )
    .await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST).2.as_deref(),
        Some("prompt")
    );
    assert_eq!(jobs_with_status(&state, "queued").await, 0);
    assert_eq!(jobs_with_status(&state, "failed").await, 0);
    // What passes the door runs.
    let ok = json!({"prompt": "p", "width": 64, "height": 64, "steps": 2,
                    "layout": {"width": 512, "height": 512, "lines": [line(json!([0, 0, 512, 256]))]}});
    let r = post_waiting(&state, "/v1/generations", ok).await.json();
    assert_eq!(r["status"], "succeeded", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_keywords_are_refused_naming_them() {
    let state = with_engine(settings("invisible"), Duration::ZERO);
    for invisible in ["\u{200B}\u{200D}", "\u{0}", "\u{E000}\u{E001}", "\u{FEFF}"] {
        let r = post(
            &state,
            "/v1/layouts",
            json!({"prompt": "p", "keywords": ["SALE", invisible]}),
        )
        .await;
        let (code, message, param) = r.error(StatusCode::BAD_REQUEST);
        assert_eq!(
            (code.as_str(), param.as_deref()),
            ("invalid_layout", Some("keywords"))
        );
        assert!(
            message.contains("keyword 1") && message.contains("no visible character"),
            "{message}"
        );
        let prompt = format!("a poster that says \"{invisible}\"");
        for (uri, body) in [
            ("/v1/layouts", json!({"prompt": prompt})),
            (
                "/v1/generations",
                json!({"prompt": prompt, "width": 64, "height": 64}),
            ),
        ] {
            let (_, message, param) = post(&state, uri, body).await.error(StatusCode::BAD_REQUEST);
            assert_eq!(param.as_deref(), Some("prompt"), "{uri}: {message}");
        }
    }
    assert_eq!(jobs_with_status(&state, "queued").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_answers_the_state_the_job_ends_in() {
    let state = with_engine(settings("race"), Duration::from_millis(1));
    let body = json!({"prompt": "'RACE'", "width": 64, "height": 64, "steps": 3});
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..60 {
        let id = post(&state, "/v1/generations", body.clone()).await.json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // Vary the moment: queued, planning, between steps, finishing.
        tokio::time::sleep(Duration::from_micros(500 * (round % 12))).await;
        let answer = post(&state, &format!("/v1/generations/{id}/cancel"), json!({}))
            .await
            .json();
        let said = answer["status"].as_str().unwrap().to_string();
        assert!(
            ["canceled", "succeeded"].contains(&said.as_str()),
            "{answer}"
        );
        let events = sse_events(
            &get(&state, &format!("/v1/generations/{id}/events"))
                .await
                .body,
        );
        let ended = get(&state, &format!("/v1/generations/{id}")).await.json();
        assert_eq!(ended["status"], said.as_str(), "round {round}: {ended}");
        assert_eq!(
            events.last().map(|e| e.0.as_str()),
            Some(said.as_str()),
            "round {round}"
        );
        *outcomes.entry(said).or_insert(0) += 1;
    }
    eprintln!("cancel outcomes over 60 races: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_json_error_object() {
    let mut s = settings("shape");
    s.api_key_hashes = vec![sha256_hex("k1")];
    let state = plain_on(s);
    let key = [("authorization", "BEARER k1")];
    // A path that does not decode to UTF-8.
    let r = call(&state, Method::GET, "/v1/files/%ff%fe", &key, None).await;
    let (code, ..) = r.error(StatusCode::BAD_REQUEST);
    assert_eq!(code, "invalid_request");
    // The scheme is case-insensitive.
    for auth in ["BEARER k1", "bearer k1", "Bearer k1"] {
        let r = call(
            &state,
            Method::GET,
            "/v1/files/file_00000000000000000000000000000000",
            &[("authorization", auth)],
            None,
        )
        .await;
        assert_eq!(r.error(StatusCode::NOT_FOUND).0, "not_found", "{auth}");
    }
    // /metrics follows the keys.
    let r = get(&state, "/metrics").await;
    assert_eq!(r.error(StatusCode::UNAUTHORIZED).0, "missing_api_key");
    let r = call(&state, Method::GET, "/metrics", &key, None).await;
    assert_eq!(r.status, StatusCode::OK);
    // A layout that is not an object is named `layout`.
    let r = call(
        &state,
        Method::POST,
        "/v1/render",
        &key,
        Some(json!({"layout": 5})),
    )
    .await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST).2.as_deref(),
        Some("layout")
    );
    // Render JSON names fonts, not where the server keeps them.
    let layout =
        json!({"width": 64, "height": 32, "lines": [{"text": "Hi", "bbox": [0, 0, 64, 32]}]});
    let r = call(
        &state,
        Method::POST,
        "/v1/render",
        &key,
        Some(json!({"layout": layout, "format": "json"})),
    )
    .await;
    let body = r.json();
    let font = body["lines"][0]["font"].as_str().unwrap();
    assert!(!font.contains('/') && !font.is_empty(), "{font}");
    assert!(
        !String::from_utf8_lossy(&r.body).contains("/usr/share"),
        "{body}"
    );
}
