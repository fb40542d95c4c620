//! What the router tests share: `GlyphEngine`, a stand-in at the engine boundary that plans
//! and renders as the poster engine does and paints the glyph mask instead of running
//! diffusion (the crate has no tensors; the real poster engine is exercised by the
//! workspace's `tests/serve_process.rs`), services built on temporary data folders, and
//! `oneshot` calls with their answers.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use image::{GrayImage, RgbImage};
use letterpress_api::{
    AppState, EngineError, EngineEvent, EngineInfo, EngineJob, PosterEngine, Settings, Shared,
    StepProgress, StopToken, app, spawn_worker,
};
use letterpress_layout::{CanvasPlan, Layout, PlannerChoice, plan_on_canvas};
use letterpress_render::{MissingGlyph, RenderOptions, Renderer};
use serde_json::Value;
use tower::ServiceExt;

pub struct GlyphEngine {
    step_delay: Duration,
    renderer: Renderer,
}

impl GlyphEngine {
    pub fn new(step_delay: Duration) -> Self {
        let options = RenderOptions {
            missing_glyph: MissingGlyph::Skip,
            ..Default::default()
        };
        GlyphEngine {
            step_delay,
            renderer: Renderer::new(options).unwrap(),
        }
    }

    /// The layout the job asks for: its own, fitted to the canvas, or its keywords planned.
    fn layout(&self, job: &EngineJob) -> Result<(Layout, Vec<String>), EngineError> {
        if let Some(layout) = &job.layout {
            return Ok((layout.fitted_to(job.width, job.height), Vec::new()));
        }
        let keywords = if job.keywords.is_empty() {
            letterpress_layout::extract_keywords(&job.prompt)
        } else {
            job.keywords.clone()
        };
        let request = CanvasPlan {
            prompt: &job.prompt,
            keywords: &keywords,
            width: job.width,
            height: job.height,
            seed: job.seed,
            font: None,
        };
        let plan = plan_on_canvas(&self.renderer, &PlannerChoice::Typographic, &request)
            .map_err(|e| EngineError::InvalidLayout(e.to_string()))?;
        Ok((plan.layout, plan.warnings))
    }
}

impl PosterEngine for GlyphEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            model: "glyph-test".into(),
            schedulers: vec!["ddim".into(), "euler".into()],
        }
    }

    fn generate(
        &mut self,
        job: &EngineJob,
        events: &mut dyn FnMut(EngineEvent) -> ControlFlow<()>,
        stop: &StopToken,
    ) -> Result<Vec<RgbImage>, EngineError> {
        let paint = |mask: &GrayImage, tint: u64| {
            RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
                let v = mask.get_pixel(x, y).0[0];
                image::Rgb([v, (tint % 251) as u8, 255 - v])
            })
        };
        if let Some(edit) = &job.edit {
            return edit_picture(edit, events);
        }
        let (layout, warnings) = self.layout(job)?;
        let lines: Vec<letterpress_api::LineCertificate> = layout
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| letterpress_api::LineCertificate {
                index: i as u32,
                text: l.text.clone(),
                read: l.text.clone(),
                edit_distance: 0.0,
                confidence: 90.0,
                ok: true,
                round: 0,
            })
            .collect();
        let rendering = self
            .renderer
            .render(&layout)
            .map_err(|e| EngineError::InvalidLayout(e.to_string()))?;
        let stages = [
            EngineEvent::Planned { layout, warnings },
            EngineEvent::Rendered {
                glyph_mask: rendering.glyph_mask.clone(),
                warnings: rendering.warnings,
            },
        ];
        for event in stages {
            if events(event).is_break() || stop.should_stop() {
                return Err(EngineError::Stopped);
            }
        }
        let glyph_mask = rendering.glyph_mask;
        assert!(!job.prompt.contains("PANIC"), "a model bug");
        if let Some(init) = &job.init {
            // Hands the picture back with what it was asked marked in pixel (0, 0), so tests
            // can check the worker passed image, line and strength through.
            let mut out = init.image.clone();
            out.put_pixel(
                0,
                0,
                image::Rgb([
                    init.inpaint_line.map_or(255, |i| i as u8),
                    (init.strength * 100.0).round() as u8,
                    7,
                ]),
            );
            return Ok(vec![out; job.n as usize]);
        }
        for step in 1..=job.steps {
            if stop.should_stop() {
                return Err(EngineError::Stopped);
            }
            std::thread::sleep(self.step_delay);
            let preview = (job.preview_every > 0 && step % job.preview_every == 0)
                .then(|| paint(&glyph_mask, 0));
            let progress = StepProgress {
                step,
                steps: job.steps,
                preview,
            };
            if events(EngineEvent::Step(progress)).is_break() {
                return Err(EngineError::Stopped);
            }
        }
        if job.verify {
            // Every line "reads right", after the rounds asked for: enough to follow the
            // certificate through the worker into events and output.
            for image in 0..job.n {
                let certificate = letterpress_api::Certificate {
                    lines_ok: lines.len() as u32,
                    line_count: lines.len() as u32,
                    score: 1.0,
                    rounds: job.repair,
                    repair_seeds: (1..=u64::from(job.repair)).collect(),
                    lines: lines.clone(),
                };
                if events(EngineEvent::Verified { image, certificate }).is_break() {
                    return Err(EngineError::Stopped);
                }
            }
        }
        Ok((0..job.n)
            .map(|i| paint(&glyph_mask, job.seed + u64::from(i)))
            .collect())
    }
}

/// An edit as the real engine reports it: the new lines, the edited region, one certificate;
/// the picture comes back with pixel (0, 0) marked. An old text "MISSING" is not found.
fn edit_picture(
    edit: &letterpress_api::EngineEdit,
    events: &mut dyn FnMut(EngineEvent) -> ControlFlow<()>,
) -> Result<Vec<RgbImage>, EngineError> {
    if let Some(i) = edit
        .replacements
        .iter()
        .position(|(old, _)| old == "MISSING")
    {
        return Err(EngineError::Unsupported(format!(
            "replacements[{i}].old: \"MISSING\" is not in the picture; OCR read nothing"
        )));
    }
    let (w, h) = edit.image.dimensions();
    let bbox = letterpress_layout::BBox::new(0, 0, w as i32 / 2, h as i32 / 2);
    let lines: Vec<_> = edit
        .replacements
        .iter()
        .map(|(_, new)| letterpress_layout::TextLine::new(new.clone(), bbox))
        .collect();
    let certificate = letterpress_api::Certificate {
        lines_ok: 0,
        line_count: lines.len() as u32,
        score: 0.0,
        rounds: 0,
        repair_seeds: Vec::new(),
        lines: Vec::new(),
    };
    let stages = [
        EngineEvent::Planned {
            layout: Layout::new(w, h, lines),
            warnings: Vec::new(),
        },
        EngineEvent::Rendered {
            glyph_mask: GrayImage::new(w, h),
            warnings: Vec::new(),
        },
        EngineEvent::Verified {
            image: 0,
            certificate,
        },
    ];
    for event in stages {
        if events(event).is_break() {
            return Err(EngineError::Stopped);
        }
    }
    let mut out = edit.image.clone();
    out.put_pixel(0, 0, image::Rgb([1, 2, 3]));
    Ok(vec![out])
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lp-router-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn settings(name: &str) -> Settings {
    Settings {
        data_dir: temp_dir(name),
        rate_limit_per_minute: 0,
        ..Settings::default()
    }
}

/// A service without a model.
pub fn plain(name: &str) -> AppState {
    let state = Shared::new(settings(name)).unwrap();
    spawn_worker(state.clone(), None);
    state
}

/// A service whose worker has a `GlyphEngine`.
pub fn with_engine(settings: Settings, step_delay: Duration) -> AppState {
    let state = Shared::new(settings).unwrap();
    spawn_worker(
        state.clone(),
        Some(Box::new(move || {
            Ok(Box::new(GlyphEngine::new(step_delay)) as Box<dyn PosterEngine>)
        })),
    );
    for _ in 0..500 {
        if matches!(state.model_state(), letterpress_api::ModelState::Ready(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    state
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the OpenAI error shape and returns (code, message, param).
    pub fn error(&self, status: StatusCode) -> (String, String, Option<String>) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let e = &self.json()["error"];
        for k in ["code", "message", "param", "type"] {
            assert!(e.get(k).is_some(), "error lacks {k}: {e}");
        }
        (
            e["code"].as_str().unwrap().into(),
            e["message"].as_str().unwrap().into(),
            e["param"].as_str().map(Into::into),
        )
    }
}

/// `POST uri` with `Prefer: wait=30`: the answer once the job ends.
pub async fn post_waiting(state: &AppState, uri: &str, body: Value) -> Reply {
    call(
        state,
        Method::POST,
        uri,
        &[("prefer", "wait=30")],
        Some(body),
    )
    .await
}

pub async fn call(
    state: &AppState,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "test.local");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(60), res.into_body().collect())
        .await
        .expect("body did not end")
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(state: &AppState, uri: &str, body: Value) -> Reply {
    call(state, Method::POST, uri, &[], Some(body)).await
}

pub async fn get(state: &AppState, uri: &str) -> Reply {
    call(state, Method::GET, uri, &[], None).await
}

/// `/v1/files/{id}` path of an absolute URL from an answer.
pub fn path_of(url: &Value) -> String {
    let url = url.as_str().unwrap();
    url.strip_prefix("http://test.local")
        .unwrap_or(url)
        .to_string()
}

pub fn sse_events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|block| {
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(k) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    kind = Some(k.trim().to_string());
                }
                if let Some(d) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    data = serde_json::from_str(d.trim()).ok();
                }
            }
            Some((kind?, data?))
        })
        .collect()
}

pub fn plain_on(settings: Settings) -> AppState {
    let state = Shared::new(settings).unwrap();
    spawn_worker(state.clone(), None);
    state
}
