//! The LLM planner against a replay stub: a real HTTP server on loopback that answers with
//! recorded TextDiffuser-2-style answers (good and malformed) and records what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use letterpress_layout::td2::{planner_prompt, vicuna_wrap};
use letterpress_layout::{Constraint, LayoutError, LlmApi, LlmConfig, LlmPlanner};
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

// --- Constrained decoding: the request each server family receives (docs/llm-planner.md) ---

fn json_answer() -> (u16, String) {
    chat_answer(
        r#"{"Coffee": {"left": 20, "top": 14, "right": 108, "bottom": 44}, "open daily": {"left": 32, "top": 90, "right": 96, "bottom": 106}}"#,
    )
}

fn plan_with(c: LlmConfig) -> letterpress_layout::Plan {
    let renderer = Renderer::with_default_font().unwrap();
    LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 7)
        .unwrap()
}

#[test]
fn llama_cpp_family_gets_a_grammar_and_nothing_else() {
    let stub = Stub::start(vec![chat_answer(
        "Coffee 20,14,108,44\nopen daily 32,90,96,106\n",
    )]);
    let plan = plan_with(config(&stub));
    assert_eq!(plan.planner, "llm");
    let body = &stub.requests()[0].body;
    let grammar = body["grammar"].as_str().unwrap();
    assert!(grammar.starts_with("root ::= line0 line1\n"), "{grammar}");
    assert!(grammar.contains("line1 ::= \"open daily \" box \"\\n\""));
    assert!(body.get("response_format").is_none(), "never both fields");
    assert_eq!(
        body["messages"][0]["content"],
        planner_prompt(PROMPT, &keywords())
    );
    // What worked is remembered: the next plan asks in the same mode, once.
    plan_with(config(&stub));
    assert_eq!(stub.requests().len(), 2);
    assert!(stub.requests()[1].body.get("grammar").is_some());
}

#[test]
fn openai_refuses_the_grammar_and_gets_a_strict_json_schema() {
    let refusal = (
        400,
        r#"{"error":{"message":"Unrecognized request argument supplied: grammar","type":"invalid_request_error","param":null}}"#.to_string(),
    );
    let stub = Stub::start(vec![refusal, json_answer()]);
    let plan = plan_with(config(&stub));
    assert_eq!(plan.planner, "llm", "{:?}", plan.warnings);
    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    let format = &requests[1].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["required"], json!(["Coffee", "open daily"]));
    assert_eq!(schema["additionalProperties"], false);
    let left = &schema["properties"]["Coffee"]["properties"]["left"];
    assert_eq!(
        left,
        &json!({"type": "integer", "minimum": 0, "maximum": 128})
    );
    assert!(requests[1].body.get("grammar").is_none());
    let content = requests[1].body["messages"][0]["content"].as_str().unwrap();
    assert!(content.contains("JSON"), "{content}");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("refused the grammar"))
    );
    let lines: Vec<_> = plan.layout.lines.iter().map(|l| l.bbox).collect();
    assert_eq!(lines[0], letterpress_layout::BBox::new(80, 56, 432, 176));
}

#[test]
fn vllm_ignores_the_grammar_and_gets_a_json_schema() {
    let stub = Stub::start(vec![
        chat_answer("Sure! Coffee goes at the top."),
        json_answer(),
    ]);
    let plan = plan_with(config(&stub));
    assert_eq!(plan.planner, "llm", "{:?}", plan.warnings);
    let requests = stub.requests();
    assert!(requests[0].body.get("grammar").is_some());
    assert_eq!(requests[1].body["response_format"]["type"], "json_schema");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("ignored the grammar"))
    );
}

#[test]
fn llama_cpp_python_json_object_mode_uses_an_enum() {
    let stub = Stub::start(vec![json_answer()]);
    let mut c = config(&stub);
    c.constrain = Constraint::JsonObject;
    let plan = plan_with(c);
    assert_eq!(plan.planner, "llm");
    let format = &stub.requests()[0].body["response_format"];
    assert_eq!(format["type"], "json_object");
    let left = &format["schema"]["properties"]["open daily"]["properties"]["left"];
    assert_eq!(left["enum"].as_array().unwrap().len(), 129);
    assert!(left.get("minimum").is_none());
}

#[test]
fn explicit_modes_never_fall_back_and_none_sends_no_constraint() {
    let stub = Stub::start(vec![(
        500,
        r#"{"error":{"message":"response_format: Input should be 'text' or 'json_object'"}}"#
            .into(),
    )]);
    let mut c = config(&stub);
    c.constrain = Constraint::JsonSchema;
    c.retries = 0;
    c.strict = true;
    let renderer = Renderer::with_default_font().unwrap();
    let err = LlmPlanner::new(c, &renderer)
        .plan(PROMPT, &keywords(), 512, 512, 7)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 500") && err.contains("response_format"),
        "{err}"
    );
    assert_eq!(stub.requests().len(), 1);

    let stub = Stub::start(vec![chat_answer(&recorded("good.txt"))]);
    let mut c = config(&stub);
    c.constrain = Constraint::None;
    plan_with(c);
    let body = &stub.requests()[0].body;
    assert!(body.get("grammar").is_none() && body.get("response_format").is_none());
}

#[test]
fn an_edit_sends_the_demo_conversation() {
    let renderer = Renderer::with_default_font().unwrap();
    let stub = Stub::start(vec![chat_answer(
        "Coffee 10,10,120,60\nopen daily 32,100,96,120\n",
    )]);
    let layout = letterpress_layout::Layout::new(
        512,
        512,
        vec![
            letterpress_layout::TextLine::new(
                "Coffee",
                letterpress_layout::BBox::new(80, 56, 432, 176),
            ),
            letterpress_layout::TextLine::new(
                "open daily",
                letterpress_layout::BBox::new(128, 360, 384, 424),
            ),
        ],
    );
    let plan = LlmPlanner::new(config(&stub), &renderer)
        .edit(PROMPT, &layout, "make Coffee larger", 3)
        .unwrap();
    assert_eq!(
        plan.layout.lines[0].bbox,
        letterpress_layout::BBox::new(40, 40, 480, 240)
    );
    let messages = &stub.requests()[0].body["messages"];
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"],
        "Coffee 20,14,108,44\nopen daily 32,90,96,106"
    );
    assert!(
        messages[2]["content"]
            .as_str()
            .unwrap()
            .starts_with("make Coffee larger")
    );
}
