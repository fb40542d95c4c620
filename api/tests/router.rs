//! Router tests: every endpoint and its errors through `app(state).oneshot(...)`.
//!
//! Generation flows use `GlyphEngine`, a stand-in at the engine boundary that plans and renders
//! as the poster engine does and paints the glyph mask instead of running diffusion (the crate
//! has no tensors; the real poster engine is exercised by the workspace's
//! `tests/serve_process.rs`). Everything else is real: SQLite store, files,
//! worker thread, planner, renderer.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use letterpress_api::{app, sha256_hex};
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let state = plain("ops");
    let r = get(&state, "/healthz").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    assert!(r.headers.get("x-request-id").is_some(), "request id echoed");
    let r = get(&state, "/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["generation"]["available"], json!(false));
    let r = get(&state, "/metrics").await;
    let text = String::from_utf8(r.body).unwrap();
    for name in [
        "letterpress_queue_depth 0",
        "letterpress_jobs{status=\"succeeded\"}",
        "letterpress_step_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let r = get(&state, "/openapi.json").await;
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/layouts",
        "/v1/render",
        "/v1/generations",
        "/v1/generations/{id}/events",
        "/v1/images/generations",
        "/v1/files/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
    assert_eq!(
        doc["components"]["schemas"]["GenerationRequest"]["properties"]["steps"]["maximum"],
        150
    );
    assert_eq!(
        doc["components"]["schemas"]["LayoutRequest"]["properties"]["planner"]["enum"],
        json!(["typographic"]),
        "no llm_url: the LLM planner is not offered"
    );
    let r = get(&state, "/docs").await;
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("/v1/generations") && html.contains("GenerationRequest"));
    let (code, ..) = get(&state, "/nowhere").await.error(StatusCode::NOT_FOUND);
    assert_eq!(code, "not_found");
    let r = call(&state, Method::DELETE, "/v1/layouts", &[], None).await;
    r.error(StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        r.headers.get(header::ALLOW).is_some(),
        "405 names the allowed methods"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_edit_a_previous_layout_through_messages() {
    let state = plain("layout-edits");
    let previous = json!({"width": 512, "height": 512, "lines": [
        {"text": "Jazz Night", "bbox": [56, 40, 456, 140]},
        {"text": "Friday 9pm", "bbox": [156, 160, 356, 200]}]});
    let edit = |content: Value, instruction: &str| {
        json!({"prompt": "a jazz poster", "seed": 1, "messages": [
            {"role": "user", "content": "a jazz poster"},
            {"role": "assistant", "content": content},
            {"role": "user", "content": instruction}]})
    };
    let r = post(
        &state,
        "/v1/layouts",
        edit(
            previous.clone(),
            "make the title larger and move the date to the bottom",
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let plan = r.json();
    assert_eq!(plan["planner"], "edit");
    assert_eq!(plan["lines"][0]["bbox"], json!([6, 28, 506, 153]));
    assert_eq!(plan["lines"][1]["bbox"][3], 492);
    assert_eq!(plan["keywords"], json!(["Jazz Night", "Friday 9pm"]));
    // The previous layout as TextDiffuser-2 lines works too.
    let r = post(
        &state,
        "/v1/layouts",
        edit(
            json!("Jazz Night 14,10,114,35\nFriday 9pm 39,40,89,50"),
            "align the date left",
        ),
    )
    .await;
    assert_eq!(r.json()["lines"][1]["align"], "left");

    let cases = [
        (
            edit(previous.clone(), "make it pop"),
            "messages",
            "Understood edits",
        ),
        (
            edit(json!("no layout here"), "make it larger"),
            "messages[1].content",
            "holds no layout",
        ),
        (
            json!({"prompt": "p", "messages": [{"role": "assistant", "content": previous.clone()}]}),
            "messages",
            "2 to 16",
        ),
        (
            json!({"prompt": "p", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}),
            "messages",
            "assistant",
        ),
        (
            json!({"prompt": "p", "messages": [{"role": "assistant", "content": previous.clone()}, {"role": "bot", "content": "y"}]}),
            "messages[1].role",
            "one of",
        ),
        (
            json!({"prompt": "p", "llm_constrain": "regex"}),
            "llm_constrain",
            "one of",
        ),
    ];
    for (body, param, words) in cases {
        let (_, message, p) = post(&state, "/v1/layouts", body.clone())
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(p.as_deref(), Some(param), "{body}: {message}");
        assert!(message.contains(words), "{body}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_plan_and_explain_bad_input() {
    let state = plain("layouts");
    let r = post(
        &state,
        "/v1/layouts",
        json!({"prompt": "a poster that says 'GRAND OPENING' and 'Saturday 10am'", "seed": 3}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let plan = r.json();
    assert_eq!(plan["lines"].as_array().unwrap().len(), 2);
    assert_eq!(plan["seed"], 3);
    assert_eq!(plan["keywords"], json!(["GRAND OPENING", "Saturday 10am"]));
    // Same seed, same plan; any accepted canvas works, even outside the planner's own range.
    let again = post(
        &state,
        "/v1/layouts",
        json!({"prompt": "a poster that says 'GRAND OPENING' and 'Saturday 10am'", "seed": 3}),
    )
    .await
    .json();
    assert_eq!(plan, again);
    let wide = post(
        &state,
        "/v1/layouts",
        json!({"prompt": "p", "keywords": ["SALE"], "width": 2048, "height": 64}),
    )
    .await;
    assert_eq!(wide.status, StatusCode::OK);

    let cases = [
        (json!({"keywords": ["x"]}), "prompt", "required"),
        (
            json!({"prompt": "p", "width": 10}),
            "width",
            "from 64 to 2048",
        ),
        (
            json!({"prompt": "p", "keywords": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
            "keywords",
            "at most 8",
        ),
        (
            json!({"prompt": "p", "planner": "llm"}),
            "planner",
            "not configured",
        ),
        (json!({"prompt": "p", "seed": -1}), "seed", "whole number"),
        (
            json!({"prompt": "p", "colour": 1}),
            "colour",
            "unknown field",
        ),
        (json!(["prompt"]), "body", "JSON object"),
    ];
    for (body, param, words) in cases {
        let (_, message, p) = post(&state, "/v1/layouts", body.clone())
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(p.as_deref(), Some(param), "{body}");
        assert!(message.contains(words), "{body}: {message}");
    }
    let req = |ct: &'static str, body: &'static str| {
        Request::post("/v1/layouts")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let res = app(state.clone())
        .oneshot(req("text/plain", "{}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = app(state.clone())
        .oneshot(req("application/json", "{\"prompt\": "))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let huge = json!({ "prompt": "x".repeat(2 << 20) });
    let (code, message, _) = post(&state, "/v1/layouts", huge)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code, "request_too_large");
    assert!(message.contains("1048576"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_answers_png_or_json_with_char_boxes() {
    let state = plain("render");
    let layout = json!({"width": 320, "height": 160, "lines": [{"text": "Hi there", "bbox": [20, 20, 300, 120], "color": "#ff0000"}]});
    let r = post(&state, "/v1/render", json!({ "layout": layout })).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "image/png");
    let mask = image::load_from_memory(&r.body).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (320, 160));
    assert!(mask.pixels().any(|p| p.0[0] == 255), "text is drawn white");

    let r = post(&state, "/v1/render", json!({ "layout": layout, "format": "json", "segmentation": true, "preview": true, "inverse": true })).await;
    let body = r.json();
    let boxes = body["char_boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), "Hithere".len(), "one box per inked character");
    assert_eq!(boxes[0]["char"], "H");
    use base64::Engine as _;
    for key in ["mask_png_b64", "segmentation_png_b64", "preview_png_b64"] {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body[key].as_str().unwrap())
            .unwrap();
        assert_eq!(
            image::load_from_memory(&bytes).unwrap().width(),
            320,
            "{key}"
        );
    }

    let line = |extra: Value| {
        let mut l = json!({"text": "a", "bbox": [0, 0, 50, 50]});
        l.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"layout": {"width": 64, "height": 64, "lines": [l]}})
    };
    let cases = [
        (json!({}), "layout"),
        (
            json!({"layout": {"width": 0, "height": 64}}),
            "layout.width",
        ),
        (
            json!({"layout": {"width": 4000, "height": 64}}),
            "layout.width",
        ),
        (line(json!({"bbox": [0, 0, 10]})), "layout.lines[0].bbox"),
        (line(json!({"font": "/etc/passwd"})), "layout.lines[0].font"),
        (line(json!({"color": "red"})), "layout.lines[0].color"),
        (
            line(json!({"bbox": [10, 10, 5, 5]})),
            "layout.lines[0].bbox",
        ),
        (json!({"layout": "a string"}), "layout"),
    ];
    for (body, param) in cases {
        let (_, _, p) = post(&state, "/v1/render", body.clone())
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(p.as_deref(), Some(param), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_generations_answer_503_saying_how_to_give_one() {
    let state = plain("nomodel");
    // Validation comes first: a bad request is told what is wrong.
    let (_, message, param) = post(
        &state,
        "/v1/generations",
        json!({"prompt": "p", "steps": 151}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert_eq!(param.as_deref(), Some("steps"));
    assert!(message.contains("1 to 150"), "{message}");
    let (code, message, _) = post(&state, "/v1/generations", json!({"prompt": "p"}))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code, "model_not_loaded");
    assert!(
        message.contains("model_dir") && message.contains("LETTERPRESS_MODEL_DIR"),
        "{message}"
    );
    let (code, ..) = post(&state, "/v1/images/generations", json!({"prompt": "p"}))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code, "model_not_loaded");
    // Planning and rendering still work.
    assert_eq!(
        post(&state, "/v1/layouts", json!({"prompt": "'x'"}))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_runs_streams_events_and_serves_files() {
    let dir_settings = settings("gen");
    let data_dir = dir_settings.data_dir.clone();
    let state = with_engine(dir_settings.clone(), Duration::ZERO);
    let body = json!({"prompt": "a poster that says 'OPEN'", "width": 256, "height": 128, "n": 2, "seed": 9, "steps": 4, "preview_every": 2, "output_format": "webp"});
    let r = post_waiting(&state, "/v1/generations", body).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.headers["preference-applied"], "wait=30");
    let job = r.json();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["input"]["seed"], 9);
    assert_eq!(
        job["input"]["scheduler"], "ddim",
        "the model's first scheduler is the default"
    );
    assert_eq!(
        job["urls"]["get"],
        format!("http://test.local/v1/generations/{id}")
    );
    let images = job["output"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let f = get(&state, &path_of(&images[1]["url"])).await;
    assert_eq!(f.headers[header::CONTENT_TYPE], "image/webp");
    let img = image::load_from_memory(&f.body).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (256, 128));
    assert_eq!(
        img.get_pixel(0, 0).0[1],
        10,
        "image 1 painted with seed 9 + 1"
    );
    let mask = get(&state, &path_of(&job["output"]["mask"]["url"])).await;
    assert_eq!(image::load_from_memory(&mask.body).unwrap().width(), 256);
    let layout = get(&state, &path_of(&job["output"]["layout"]["url"]))
        .await
        .json();
    assert_eq!(layout["lines"][0]["text"], "OPEN");

    let r = get(&state, &format!("/v1/generations/{id}")).await;
    assert_eq!(r.json()["status"], "succeeded");

    let r = get(&state, &format!("/v1/generations/{id}/events")).await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/event-stream");
    let events = sse_events(&r.body);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "layout",
            "rendering",
            "step",
            "step",
            "step",
            "step",
            "succeeded"
        ]
    );
    assert_eq!(
        events[4].1,
        json!({"step": 2, "steps": 4}),
        "previews are live-only, not replayed"
    );
    let r = call(
        &state,
        Method::GET,
        &format!("/v1/generations/{id}/events"),
        &[("last-event-id", "6")],
        None,
    )
    .await;
    let kinds: Vec<String> = sse_events(&r.body).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["step", "succeeded"], "Last-Event-ID resumes");

    let text = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    assert!(text.contains("letterpress_step_seconds_count 4"), "{text}");
    assert!(
        text.contains("letterpress_jobs{status=\"succeeded\"} 1"),
        "{text}"
    );

    // b64_json embeds the images; the OpenAI shim answers in OpenAI's shape.
    let r = post(&state, "/v1/generations", json!({"prompt": "'B64'", "width": 64, "height": 64, "steps": 1, "response_format": "b64_json"})).await;
    let id2 = r.json()["id"].as_str().unwrap().to_string();
    let r = post_waiting(
        &state,
        "/v1/generations",
        json!({"prompt": "'C'", "width": 64, "height": 64, "steps": 1}),
    )
    .await;
    assert_eq!(r.json()["status"], "succeeded");
    let r = get(&state, &format!("/v1/generations/{id2}")).await.json();
    assert!(
        r["output"]["images"][0]["b64_json"]
            .as_str()
            .is_some_and(|s| s.len() > 20),
        "{r}"
    );
    let r = post(&state, "/v1/images/generations", json!({"prompt": "'HELLO'", "size": "128x64", "n": 1, "response_format": "b64_json", "model": "dall-e-3"})).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let body = r.json();
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 128);
    let (_, message, param) = post(
        &state,
        "/v1/images/generations",
        json!({"prompt": "p", "size": "100x100"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert_eq!(param.as_deref(), Some("size"));
    assert!(message.contains("512x512"), "{message}");

    // Restart on the same data directory: the job and its files are still there.
    let base_count = std::fs::read_dir(data_dir.join("files")).unwrap().count();
    drop(state);
    let state = plain_on(dir_settings);
    let r = get(&state, &format!("/v1/generations/{id}")).await.json();
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        get(&state, &path_of(&r["output"]["images"][0]["url"]))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        std::fs::read_dir(data_dir.join("files")).unwrap().count(),
        base_count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_or_conflict() {
    let state = with_engine(settings("idem"), Duration::ZERO);
    let body = json!({"prompt": "'A'", "width": 64, "height": 64, "steps": 1, "seed": 1});
    let first = call(
        &state,
        Method::POST,
        "/v1/generations",
        &[("idempotency-key", "k-1")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = call(
        &state,
        Method::POST,
        "/v1/generations",
        &[("idempotency-key", "k-1")],
        Some(body),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(first.json()["id"], again.json()["id"]);
    let other = json!({"prompt": "'B'", "width": 64, "height": 64, "steps": 1, "seed": 1});
    let (code, ..) = call(
        &state,
        Method::POST,
        "/v1/generations",
        &[("idempotency-key", "k-1")],
        Some(other.clone()),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code, "idempotency_key_reused");
    let long = "k".repeat(256);
    let (_, _, param) = call(
        &state,
        Method::POST,
        "/v1/generations",
        &[("idempotency-key", &long)],
        Some(other),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert_eq!(param.as_deref(), Some("Idempotency-Key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queue_bound_and_timeout() {
    let mut s = settings("cancel");
    s.queue_capacity = 1;
    let state = with_engine(s, Duration::from_millis(20));
    let slow = json!({"prompt": "'SLOW'", "width": 64, "height": 64, "steps": 150});
    let running = post(&state, "/v1/generations", slow.clone()).await.json();
    let running_id = running["id"].as_str().unwrap().to_string();
    // Wait until the worker has taken it, so the next one waits in the queue.
    for _ in 0..500 {
        if get(&state, &format!("/v1/generations/{running_id}"))
            .await
            .json()["status"]
            != "queued"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued = post(&state, "/v1/generations", slow.clone()).await;
    assert_eq!(queued.status, StatusCode::CREATED);
    let queued_id = queued.json()["id"].as_str().unwrap().to_string();
    let full = post(&state, "/v1/generations", slow.clone()).await;
    let (code, ..) = full.error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code, "queue_full");
    assert!(full.headers.get(header::RETRY_AFTER).is_some());

    // A queued job is canceled at once; the running one between steps.
    let r = post(
        &state,
        &format!("/v1/generations/{queued_id}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(r.json()["status"], "canceled");
    post(
        &state,
        &format!("/v1/generations/{running_id}/cancel"),
        json!({}),
    )
    .await;
    let events = sse_events(
        &get(&state, &format!("/v1/generations/{running_id}/events"))
            .await
            .body,
    );
    assert_eq!(events.last().unwrap().0, "canceled");
    assert!(
        events.iter().filter(|(k, _)| k == "step").count() < 150,
        "stopped early"
    );
    assert_eq!(
        get(&state, &format!("/v1/generations/{running_id}"))
            .await
            .json()["status"],
        "canceled"
    );

    let mut s = settings("timeout");
    s.job_timeout_secs = 1;
    let state = with_engine(s, Duration::from_millis(20));
    let r = post_waiting(&state, "/v1/generations", slow).await.json();
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["error"]["code"], "timeout");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("job_timeout_secs")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_traversal_are_not_found() {
    let state = with_engine(settings("ids"), Duration::ZERO);
    for uri in [
        "/v1/generations/gen_00000000000000000000000000000000",
        "/v1/generations/..%2F..%2Fletterpress.sqlite3",
        "/v1/generations/x/events",
        "/v1/files/..%2Fletterpress.sqlite3",
        "/v1/files/file_..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/files/%2E%2E",
        "/v1/files/file_00000000000000000000000000000000",
    ] {
        let r = get(&state, uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
    }
    let (code, ..) = post(
        &state,
        "/v1/generations/gen_00000000000000000000000000000000/cancel",
        json!({}),
    )
    .await
    .error(StatusCode::NOT_FOUND);
    assert_eq!(code, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rate_limits_ownership_and_ttl() {
    let mut s = settings("keys");
    s.api_key_hashes = vec![sha256_hex("alpha-key"), sha256_hex("beta-key")];
    s.rate_limit_per_minute = 3;
    s.file_ttl_secs = 0;
    let state = with_engine(s, Duration::ZERO);
    let layouts = json!({"prompt": "'K'"});
    let r = post(&state, "/v1/layouts", layouts.clone()).await;
    let (code, ..) = r.error(StatusCode::UNAUTHORIZED);
    assert_eq!(code, "missing_api_key");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    let (code, ..) = call(
        &state,
        Method::POST,
        "/v1/layouts",
        &[("authorization", "Bearer nope")],
        Some(layouts.clone()),
    )
    .await
    .error(StatusCode::UNAUTHORIZED);
    assert_eq!(code, "invalid_api_key");
    assert_eq!(
        get(&state, "/healthz").await.status,
        StatusCode::OK,
        "health needs no key"
    );

    let alpha = [("authorization", "Bearer alpha-key"), ("prefer", "wait=30")];
    let job = call(
        &state,
        Method::POST,
        "/v1/generations",
        &alpha,
        Some(json!({"prompt": "'K'", "width": 64, "height": 64, "steps": 1})),
    )
    .await
    .json();
    let id = job["id"].as_str().unwrap();
    let beta = [("authorization", "Bearer beta-key")];
    let r = call(
        &state,
        Method::GET,
        &format!("/v1/generations/{id}"),
        &beta,
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another key cannot see the job"
    );
    // file_ttl_secs = 0: files expire at once.
    let r = call(
        &state,
        Method::GET,
        &path_of(&job["output"]["mask"]["url"]),
        &alpha[..1],
        None,
    )
    .await;
    let (code, ..) = r.error(StatusCode::GONE);
    assert_eq!(code, "file_expired");
    // alpha's third request of its 3 a minute passes, the fourth waits.
    let r = call(
        &state,
        Method::POST,
        "/v1/layouts",
        &alpha[..1],
        Some(layouts.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &state,
        Method::POST,
        "/v1/layouts",
        &alpha[..1],
        Some(layouts.clone()),
    )
    .await;
    let (code, ..) = r.error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code, "rate_limit_exceeded");
    assert!(
        r.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let r = call(&state, Method::POST, "/v1/layouts", &beta, Some(layouts)).await;
    assert_eq!(r.status, StatusCode::OK, "limits are per key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_figma_null_origin_when_configured() {
    let mut s = settings("cors");
    s.cors_origins = vec!["null".into(), "https://www.figma.com".into()];
    let state = plain_on(s);
    let preflight = [
        ("origin", "null"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type,authorization",
        ),
    ];
    let r = call(&state, Method::OPTIONS, "/v1/render", &preflight, None).await;
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "null");
    let r = call(
        &state,
        Method::GET,
        "/healthz",
        &[("origin", "https://evil.example")],
        None,
    )
    .await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let state = plain("nocors");
    let r = call(&state, Method::GET, "/healthz", &[("origin", "null")], None).await;
    assert!(
        r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "CORS is off by default"
    );
}

#[test]
fn server_errors_hide_their_cause() {
    use axum::response::IntoResponse;
    let res = letterpress_api::ApiError::internal("disk /secret/path full").into_response();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = rt.block_on(res.into_body().collect()).unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("secret") && text.contains("internal_error"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_limits_are_enforced_and_published() {
    let mut s = settings("limits");
    s.max_side = 256;
    s.max_steps = 8;
    s.max_n = 2;
    let state = with_engine(s, Duration::ZERO);
    let (_, message, param) = post(
        &state,
        "/v1/generations",
        json!({"prompt": "p", "width": 512}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert_eq!(param.as_deref(), Some("width"));
    assert!(message.contains("from 64 to 256"), "{message}");
    let (_, message, _) = post(
        &state,
        "/v1/generations",
        json!({"prompt": "p", "steps": 9}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert!(message.contains("1 to 8"), "{message}");
    let (_, _, param) = post(
        &state,
        "/v1/images/generations",
        json!({"prompt": "p", "size": "512x512"}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert_eq!(param.as_deref(), Some("size"));
    let doc = get(&state, "/openapi.json").await.json();
    let props = &doc["components"]["schemas"]["GenerationRequest"]["properties"];
    assert_eq!(
        (
            props["width"]["maximum"].as_u64(),
            props["steps"]["maximum"].as_u64(),
            props["n"]["maximum"].as_u64()
        ),
        (Some(256), Some(8), Some(2))
    );
    assert_eq!(
        doc["components"]["schemas"]["GenerationRequest"]["x-max-pixel-steps"],
        512 * 512 * 30,
        "the CPU's job budget"
    );
    assert_eq!(
        props["scheduler"]["enum"],
        json!(["ddim", "euler"]),
        "the loaded model's schedulers"
    );
    let sizes = &doc["components"]["schemas"]["OpenAIImageRequest"]["properties"]["size"]["enum"];
    assert!(sizes.as_array().unwrap().iter().all(|s| {
        s.as_str()
            .unwrap()
            .split('x')
            .all(|v| v.parse::<u32>().unwrap() <= 256)
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_model_fails_its_job_and_the_worker_goes_on() {
    let state = with_engine(settings("panic"), Duration::ZERO);
    let wait = [("prefer", "wait=30")];
    let small = |p: &str| json!({"prompt": p, "width": 64, "height": 64, "steps": 1});
    let r = call(
        &state,
        Method::POST,
        "/v1/generations",
        &wait,
        Some(small("'PANIC'")),
    )
    .await
    .json();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "generation_failed");
    assert!(
        !r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model bug"),
        "no internals"
    );
    let r = call(
        &state,
        Method::POST,
        "/v1/generations",
        &wait,
        Some(small("'FINE'")),
    )
    .await
    .json();
    assert_eq!(r["status"], "succeeded");
}

#[tokio::test]
async fn a_line_of_an_earlier_result_is_regenerated_from_its_file_or_base64() {
    use base64::Engine as _;
    let state = with_engine(settings("regen"), Duration::ZERO);
    let layout = json!({"width": 128, "height": 64, "lines": [
        {"text": "BIG", "bbox": [4, 4, 120, 30]},
        {"text": "small", "bbox": [4, 36, 120, 60]}
    ]});
    let first = post_waiting(
        &state,
        "/v1/generations",
        json!({"prompt": "p", "layout": layout, "seed": 3, "steps": 2}),
    )
    .await
    .json();
    assert_eq!(first["status"], "succeeded", "{first}");
    let image_id = first["output"]["images"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let original = get(&state, &path_of(&first["output"]["images"][0]["url"])).await;
    let original_rgb = image::load_from_memory(&original.body).unwrap().to_rgb8();

    let b64 = base64::engine::general_purpose::STANDARD.encode(&original.body);
    for reference in [image_id.clone(), format!("data:image/png;base64,{b64}")] {
        let body = json!({"prompt": "p", "layout": layout, "seed": 4, "steps": 2,
            "init_image": reference, "inpaint_line": 1, "strength": 0.5});
        let r = post_waiting(&state, "/v1/generations", body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let job = r.json();
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["input"]["inpaint_line"], 1);
        assert_eq!(job["input"]["strength"], 0.5);
        let f = get(&state, &path_of(&job["output"]["images"][0]["url"])).await;
        let img = image::load_from_memory(&f.body).unwrap().to_rgb8();
        assert_eq!(
            img.get_pixel(0, 0).0,
            [1, 50, 7],
            "line and strength reach the engine"
        );
        assert_eq!(
            img.get_pixel(60, 20),
            original_rgb.get_pixel(60, 20),
            "the engine got the image"
        );
    }

    let mask_id = first["output"]["mask"]["id"].as_str().unwrap();
    let cases = [
        (
            json!({"init_image": "file_doesnotexist000000000", "inpaint_line": 0}),
            "init_image",
            "no image file",
        ),
        (
            json!({"init_image": mask_id, "inpaint_line": 0}),
            "init_image",
            "no image file",
        ),
        (
            json!({"init_image": image_id, "inpaint_line": 2}),
            "inpaint_line",
            "out of range: the layout has 2 line(s)",
        ),
        (
            json!({"init_image": image_id, "width": 256}),
            "init_image",
            "is 128×64 but the generation is 256×64",
        ),
        (
            json!({"init_image": "bm90IGEgcG5n"}),
            "init_image",
            "not a PNG",
        ),
        (json!({"init_image": "%%%"}), "init_image", "base64 PNG"),
    ];
    for (extra, param, words) in cases {
        let mut body = json!({"prompt": "p", "layout": layout, "steps": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (code, message, p) = post(&state, "/v1/generations", body)
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(
            (code.as_str(), p.as_deref()),
            ("invalid_value", Some(param)),
            "{message}"
        );
        assert!(message.contains(words), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_jobs_carry_a_certificate_per_image_and_an_event_each() {
    let state = with_engine(settings("verify"), Duration::ZERO);
    let body = json!({"prompt": "a poster that says 'OPEN'", "width": 64, "height": 64, "n": 2, "seed": 1, "steps": 1, "repair": 2});
    let r = post_waiting(&state, "/v1/generations", body).await;
    let job = r.json();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["input"]["verify"], true, "repair implies verify");
    let certificates = job["output"]["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 2);
    assert_eq!(certificates[1]["rounds"], 2);
    assert_eq!(certificates[0]["lines"][0]["text"], "OPEN");
    // Each image carries its own certificate too.
    for (i, image) in job["output"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(image["certificate"], certificates[i], "{image}");
    }
    assert!(job["output"]["mask"].get("certificate").is_none());
    let id = job["id"].as_str().unwrap();
    let events = sse_events(
        &get(&state, &format!("/v1/generations/{id}/events"))
            .await
            .body,
    );
    let verified: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "verified")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(verified.len(), 2);
    assert_eq!(verified[1]["image"], 1);
    assert_eq!(verified[0]["certificate"]["lines_ok"], 1);

    // Off by default: no certificates, no verified events.
    let plain = post_waiting(
        &state,
        "/v1/generations",
        json!({"prompt": "'OPEN'", "width": 64, "height": 64, "steps": 1}),
    )
    .await
    .json();
    assert_eq!(plain["status"], "succeeded", "{plain}");
    assert!(plain["output"].get("certificates").is_none(), "{plain}");
    assert!(plain["input"].get("repair").is_none(), "{plain}");

    let (_, message, param) = post(
        &state,
        "/v1/generations",
        json!({"prompt": "'OPEN'", "repair": 9}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    assert_eq!(param.as_deref(), Some("repair"));
    assert!(message.contains("0 to 5"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_jobs_with_the_picture_replacements_and_a_certificate() {
    use base64::Engine as _;
    let state = with_engine(settings("edits"), Duration::ZERO);
    // An odd-sized picture: the job's size is rounded up to 8, the result keeps the picture's.
    let picture = image::RgbImage::from_pixel(101, 70, image::Rgb([9, 9, 9]));
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let body = json!({"image": b64, "replacements": [{"old": "SALE", "new": "DEAL"}],
                      "seed": 3, "steps": 2});
    let r = post_waiting(&state, "/v1/edits", body.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let job = r.json();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (
            job["input"]["width"].as_u64(),
            job["input"]["height"].as_u64()
        ),
        (Some(104), Some(72))
    );
    assert_eq!(job["input"]["edit"]["replacements"][0]["new"], "DEAL");
    assert_eq!(job["output"]["certificates"].as_array().unwrap().len(), 1);
    let f = get(&state, &path_of(&job["output"]["images"][0]["url"])).await;
    let out = image::load_from_memory(&f.body).unwrap().to_rgb8();
    assert_eq!(out.dimensions(), (101, 70));
    assert_eq!(
        out.get_pixel(0, 0).0,
        [1, 2, 3],
        "the engine got the picture"
    );
    let layout = get(&state, &path_of(&job["output"]["layout"]["url"]))
        .await
        .json();
    assert_eq!(layout["lines"][0]["text"], "DEAL");
    let id = job["id"].as_str().unwrap();
    let events = sse_events(
        &get(&state, &format!("/v1/generations/{id}/events"))
            .await
            .body,
    );
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["queued", "layout", "rendering", "verified", "succeeded"]
    );

    // An old text the engine cannot find fails the job, naming the replacement.
    let mut missing = body.clone();
    missing["replacements"] = json!([{"old": "MISSING", "new": "X"}]);
    let job = post_waiting(&state, "/v1/edits", missing).await.json();
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("replacements[0].old:"),
        "{job}"
    );

    let tiny = {
        let mut png = Vec::new();
        image::RgbImage::new(32, 70)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(&png)
    };
    let png_b64 = |img: image::DynamicImage| {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(&png)
    };
    // Transparency the RGB result could not keep, and a canvas too large to decode.
    let clear = png_b64(image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 0])).into());
    let bomb = png_b64(image::GrayImage::new(4096, 8).into());
    let cases = [
        (json!({"image": b64, "replacements": []}), "replacements"),
        (
            json!({"image": b64, "replacements": [{"old": "A", "new": ""}]}),
            "replacements[0].new",
        ),
        (
            json!({"image": "%%%", "replacements": [{"old": "A", "new": "B"}]}),
            "image",
        ),
        (
            json!({"image": tiny, "replacements": [{"old": "A", "new": "B"}]}),
            "image",
        ),
        (
            json!({"image": b64, "replacements": [{"old": "A", "new": "B"}], "n": 2}),
            "n",
        ),
        (
            json!({"image": b64, "replacements": [{"old": "A", "new": "B"}], "steps": 0}),
            "steps",
        ),
        (
            json!({"image": b64, "replacements": [{"old": "A", "new": "B\u{E000}"}]}),
            "replacements[0].new",
        ),
        (
            json!({"image": b64, "replacements": [{"old": "  ", "new": "B"}]}),
            "replacements[0].old",
        ),
        (
            json!({"image": b64, "replacements": [{"old": "A", "new": "B"}], "output_format": "jpeg"}),
            "output_format",
        ),
        (
            json!({"image": clear, "replacements": [{"old": "A", "new": "B"}]}),
            "image",
        ),
        (
            json!({"image": bomb, "replacements": [{"old": "A", "new": "B"}]}),
            "image",
        ),
    ];
    for (body, param) in cases {
        let (_, message, p) = post(&state, "/v1/edits", body)
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(p.as_deref(), Some(param), "{message}");
    }
}
