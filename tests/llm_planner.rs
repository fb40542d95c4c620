//! The LLM planner against a replay stub: a real HTTP server on loopback that answers with
//! recorded TextDiffuser-2-style answers (good and malformed) and records what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use letterpress_layout::td2::{planner_prompt, vicuna_wrap};
use letterpress_layout::{LayoutError, LlmApi, LlmConfig, LlmPlanner};
use letterpress_render::Renderer;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Request {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// Serves queued `(status, body)` answers in order (the last one repeats) on a free port.
struct Stub {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Stub {
    fn start(answers: Vec<(u16, String)>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (status, body) = answers[i.min(answers.len() - 1)].clone();
                serve(stream, status, &body, &seen);
            }
        });
        Stub { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request, records it (before answering, so the client sees it recorded), answers.
fn serve(mut stream: TcpStream, status: u16, body: &str, seen: &Mutex<Vec<Request>>) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let (mut length, mut authorization) = (0usize, None);
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut raw = vec![0; length];
    reader.read_exact(&mut raw).ok()?;
    let body_json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Request {
        path,
        authorization,
        body: body_json,
    });
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).ok()
}

fn chat_answer(content: &str) -> (u16, String) {
    (
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": content}}]}).to_string(),
    )
}

fn recorded(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/llm/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn keywords() -> Vec<String> {
    vec!["Coffee".into(), "open daily".into()]
}

fn config(stub: &Stub) -> LlmConfig {
    let mut c = LlmConfig::new(stub.url.clone(), "td2-planner");
    c.api_key = None;
    c.timeout = Duration::from_secs(5);
    c
}

const PROMPT: &str = "a poster for a coffee shop";

#[test]
fn good_answer_becomes_the_layout() {
    let renderer = Renderer::with_default_font().unwrap();
    let stub = Stub::start(vec![chat_answer(&recorded("good.txt"))]);
    let mut c = config(&stub);
    c.api_key = Some("sk-test".into());
    let plan = LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 7)
        .unwrap();
    assert_eq!(plan.planner, "llm");
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let lines: Vec<_> = plan
        .layout
        .lines
        .iter()
        .map(|l| (l.text.as_str(), l.bbox))
        .collect();
    assert_eq!(
        lines[0],
        ("Coffee", letterpress_layout::BBox::new(80, 56, 432, 176))
    );
    assert_eq!(lines[1].0, "open daily");

    let req = &stub.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(req.body["model"], "td2-planner");
    assert_eq!(req.body["seed"], 7);
    assert_eq!(
        req.body["messages"][0]["content"],
        planner_prompt(PROMPT, &keywords())
    );
}

#[test]
fn completions_api_uses_the_vicuna_template() {
    let renderer = Renderer::with_default_font().unwrap();
    let body = json!({"choices": [{"text": format!(" {}", recorded("good.txt"))}]}).to_string();
    let stub = Stub::start(vec![(200, body)]);
    let mut c = config(&stub);
    c.api = LlmApi::Completions;
    c.base_url = format!("{}/v1/", stub.url);
    let plan = LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 1024, 512, 1)
        .unwrap();
    assert_eq!(plan.layout.lines.len(), 2);
    assert_eq!(
        plan.layout.lines[0].bbox.left, 160,
        "grid x 8 px on a 1024-wide canvas"
    );
    let req = &stub.requests()[0];
    assert_eq!(req.path, "/v1/completions");
    assert_eq!(
        req.body["prompt"],
        vicuna_wrap(&planner_prompt(PROMPT, &keywords()))
    );
}

#[test]
fn chatty_answer_missing_a_keyword_gets_it_placed() {
    let renderer = Renderer::with_default_font().unwrap();
    let stub = Stub::start(vec![chat_answer(&recorded("chatty.txt"))]);
    let plan = LlmPlanner::new(config(&stub), &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap();
    assert_eq!(plan.planner, "llm+typographic");
    let texts: Vec<String> = plan
        .layout
        .lines
        .iter()
        .map(|l| l.text.replace('\n', " "))
        .collect();
    assert_eq!(texts, ["Coffee", "open daily"]);
    assert!(
        !plan.layout.lines[0]
            .bbox
            .overlaps(&plan.layout.lines[1].bbox)
    );
    assert!(
        plan.warnings.iter().any(|w| w.contains("left out")),
        "{:?}",
        plan.warnings
    );
    renderer.render(&plan.layout).unwrap();
}

#[test]
fn messy_answer_is_repaired() {
    let renderer = Renderer::with_default_font().unwrap();
    let stub = Stub::start(vec![chat_answer(&recorded("messy.txt"))]);
    let plan = LlmPlanner::new(config(&stub), &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap();
    assert_eq!(plan.planner, "llm");
    let got: Vec<_> = plan
        .layout
        .lines
        .iter()
        .map(|l| (l.text.as_str(), l.bbox.to_grid(512, 512)))
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "Coffee", "keyword spelling");
    assert_eq!(
        (got[0].1.l, got[0].1.t, got[0].1.r, got[0].1.b),
        (20, 14, 108, 44),
        "corners swapped"
    );
    assert_eq!((got[1].1.l, got[1].1.r), (32, 128), "clamped to the grid");
    let w = plan.warnings.join("\n");
    assert!(
        w.contains("duplicate") && w.contains("not one of the keywords"),
        "{w}"
    );
}

#[test]
fn unusable_answer_falls_back_or_fails_in_strict_mode() {
    let renderer = Renderer::with_default_font().unwrap();
    let stub = Stub::start(vec![chat_answer(&recorded("garbage.txt"))]);
    let plan = LlmPlanner::new(config(&stub), &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap();
    assert_eq!(plan.planner, "typographic");
    assert!(
        plan.warnings[0].contains("used the typographic planner"),
        "{:?}",
        plan.warnings
    );
    assert_eq!(plan.layout.lines.len(), 2);

    let mut strict = config(&stub);
    strict.strict = true;
    let err = LlmPlanner::new(strict, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap_err();
    assert!(matches!(err, LayoutError::UnusableAnswer { .. }), "{err}");
    assert!(
        err.to_string().contains("I'm sorry"),
        "raw answer in the error: {err}"
    );
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let renderer = Renderer::with_default_font().unwrap();
    let stub = Stub::start(vec![(503, "{}".into()), chat_answer(&recorded("good.txt"))]);
    let mut c = config(&stub);
    c.retries = 2;
    let plan = LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap();
    assert_eq!(plan.planner, "llm");
    assert_eq!(stub.requests().len(), 2);

    let stub = Stub::start(vec![(
        400,
        r#"{"error":{"message":"unknown model"}}"#.into(),
    )]);
    let mut c = config(&stub);
    c.strict = true;
    let err = LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("unknown model"),
        "{err}"
    );
    assert_eq!(stub.requests().len(), 1, "no retry on 400");
}

#[test]
fn unreachable_server_falls_back_or_fails_in_strict_mode() {
    let renderer = Renderer::with_default_font().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = LlmConfig::new(format!("http://127.0.0.1:{port}"), "m");
    c.retries = 1;
    let plan = LlmPlanner::new(c.clone(), &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap();
    assert_eq!(plan.planner, "typographic");
    c.strict = true;
    let err = LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 3)
        .unwrap_err();
    assert!(matches!(err, LayoutError::Llm { .. }), "{err}");
    assert!(err.to_string().contains("after 2 attempts"), "{err}");
}
