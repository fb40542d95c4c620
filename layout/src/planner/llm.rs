//! The LLM planner: asks any OpenAI-compatible server (vLLM, llama.cpp, OpenAI) for a
//! TextDiffuser-2-format layout, parses what comes back, and falls back to the typographic
//! planner when the answer is unusable.

use std::time::Duration;

use serde_json::{Value, json};

use super::constrain::{Constraint, JSON_INSTRUCTION, json_answer_as_td2, remember};
use super::gbnf::obeys_grammar;
use super::{Plan, TypographicPlanner, tidy};
use crate::td2::{Parsed, parse, planner_prompt, vicuna_wrap};
use crate::{Layout, LayoutError, TextMeasure};

/// Which OpenAI endpoint to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LlmApi {
    /// `/v1/chat/completions` for instruction-tuned chat models (default).
    #[default]
    Chat,
    /// `/v1/completions` with the vicuna v1.1 template, for base models such as
    /// TextDiffuser-2's own planner served by vLLM or llama.cpp.
    Completions,
}

/// How to reach the LLM.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Server root, with or without `/v1` (`http://127.0.0.1:8000`).
    pub base_url: String,
    pub model: String,
    /// Bearer token. Default: `LETTERPRESS_LLM_API_KEY`, else `OPENAI_API_KEY`, else none.
    pub api_key: Option<String>,
    pub api: LlmApi,
    /// Sampling temperature. Default 0.7 (TextDiffuser-2 samples at 0.7–1.4).
    pub temperature: f32,
    /// Default 512, as TextDiffuser-2.
    pub max_tokens: u32,
    /// Per request. Default 60 s.
    pub timeout: Duration,
    /// Extra attempts after a connection error, 429 or 5xx, with exponential backoff.
    /// Default 2.
    pub retries: u32,
    /// Fail (with the raw answer) instead of falling back to the typographic planner.
    /// Default false.
    pub strict: bool,
    /// How the answer is constrained (docs/llm-planner.md). Default `auto`.
    pub constrain: Constraint,
}

impl LlmConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let api_key = ["LETTERPRESS_LLM_API_KEY", "OPENAI_API_KEY"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        LlmConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key,
            api: LlmApi::Chat,
            temperature: 0.7,
            max_tokens: 512,
            timeout: Duration::from_secs(60),
            retries: 2,
            strict: false,
            constrain: Constraint::Auto,
        }
    }

    fn endpoint(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        match self.api {
            LlmApi::Chat => format!("{base}/v1/chat/completions"),
            LlmApi::Completions => format!("{base}/v1/completions"),
        }
    }
}

/// Plans with an LLM; the typographic planner places what the LLM left out and stands in
/// when its answer is unusable.
pub struct LlmPlanner<'m> {
    config: LlmConfig,
    agent: ureq::Agent,
    measure: &'m dyn TextMeasure,
    typographic: TypographicPlanner<'m>,
}

/// One chat turn sent to the server.
#[derive(Debug, Clone)]
struct Turn {
    role: &'static str,
    content: String,
}

/// What the server answered, in the mode that produced it.
struct Answer {
    text: String,
    mode: Constraint,
    notes: Vec<String>,
}

/// Why one request failed: `auto` moves on after a refusal of the mode's field.
enum Failure {
    Refused(String),
    Other(LayoutError),
}

impl<'m> LlmPlanner<'m> {
    pub fn new(config: LlmConfig, measure: &'m dyn TextMeasure) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        LlmPlanner {
            config,
            agent,
            measure,
            typographic: TypographicPlanner::new(measure),
        }
    }

    /// Plans `keywords` for `prompt` on a `width`×`height` canvas. The seed goes to the server
    /// (where it honours one) and to the typographic planner.
    pub fn plan(
        &self,
        prompt: &str,
        keywords: &[String],
        width: u32,
        height: u32,
        seed: u64,
    ) -> Result<Plan, LayoutError> {
        // Validate the canvas and keywords up front, so errors do not depend on the LLM.
        self.typographic.plan(width, height, &[], seed)?;
        super::check_keywords(keywords)?;
        let wanted = unique_keywords(keywords);
        let turns = |json: bool| {
            let mut content = planner_prompt(prompt, keywords);
            if json {
                content.push_str(JSON_INSTRUCTION);
            }
            vec![Turn {
                role: "user",
                content,
            }]
        };
        let answer = match self.ask(&turns, &wanted, seed) {
            Ok(answer) => answer,
            Err(e) if !self.config.strict => {
                return self.fallback(keywords, width, height, seed, format!("{e}"));
            }
            Err(e) => return Err(e),
        };
        let mut notes = answer.notes.clone();
        let parsed = read_answer(&answer, &wanted);
        if parsed.lines.is_empty() {
            let mut plan = self.unusable(answer, keywords, (width, height), seed)?;
            plan.warnings.splice(1..1, notes);
            plan.warnings.extend(parsed.warnings);
            return Ok(plan);
        }
        let mut layout = parsed.to_layout(width, height);
        notes.extend(parsed.warnings.clone());
        let missing = parsed.missing_keywords(&wanted);
        let planner = if missing.is_empty() {
            "llm"
        } else {
            notes.extend(
                self.typographic
                    .place_missing(&mut layout, &missing, seed)?,
            );
            "llm+typographic"
        };
        notes.extend(tidy::tidy(&mut layout, self.measure, None)?);
        tracing::debug!(lines = layout.lines.len(), planner, mode = %answer.mode, "LLM layout parsed");
        Ok(llm_plan(layout, planner, seed, notes))
    }

    /// Asks the LLM to change `layout` as `instruction` says, as TextDiffuser-2's demo does:
    /// the planner prompt, the layout as the assistant's answer, then the instruction. Lines
    /// keep their text, font, colour and alignment; only boxes change.
    pub fn edit(
        &self,
        prompt: &str,
        layout: &Layout,
        instruction: &str,
        seed: u64,
    ) -> Result<Plan, LayoutError> {
        let wanted = unique_keywords(
            &layout
                .lines
                .iter()
                .map(|l| l.text.clone())
                .collect::<Vec<_>>(),
        );
        let turns = |json: bool| edit_turns(prompt, layout, &wanted, instruction, json);
        let answer = self.ask(&turns, &wanted, seed)?;
        let mut notes = answer.notes.clone();
        let parsed = read_answer(&answer, &wanted);
        if parsed.lines.is_empty() {
            return Err(LayoutError::UnusableAnswer {
                reason: "no line with a text and four coordinates".into(),
                raw: answer.text,
            });
        }
        notes.extend(parsed.warnings.clone());
        let mut edited = layout.clone();
        let placed = parsed.to_layout(layout.width, layout.height);
        for line in &mut edited.lines {
            let squashed = squash_spaces(&line.text);
            match placed.lines.iter().find(|p| p.text == squashed) {
                Some(p) => line.bbox = p.bbox,
                None => notes.push(format!(
                    "the LLM left {:?} out; its box is unchanged",
                    line.text
                )),
            }
        }
        notes.extend(tidy::tidy(&mut edited, self.measure, None)?);
        Ok(llm_plan(edited, "llm", seed, notes))
    }

    /// Strict mode fails with the raw answer; otherwise the typographic planner stands in.
    fn unusable(
        &self,
        answer: Answer,
        keywords: &[String],
        (width, height): (u32, u32),
        seed: u64,
    ) -> Result<Plan, LayoutError> {
        let reason = "no line with a text and four coordinates".to_string();
        if self.config.strict {
            return Err(LayoutError::UnusableAnswer {
                reason,
                raw: answer.text,
            });
        }
        self.fallback(
            keywords,
            width,
            height,
            seed,
            format!("the answer held {reason}"),
        )
    }

    fn fallback(
        &self,
        keywords: &[String],
        width: u32,
        height: u32,
        seed: u64,
        why: String,
    ) -> Result<Plan, LayoutError> {
        // Reported to the caller in the plan's warnings; logged here for services.
        tracing::info!("LLM planner fell back to the typographic planner: {why}");
        let mut plan = self.typographic.plan(width, height, keywords, seed)?;
        plan.warnings.insert(
            0,
            format!("LLM planner unusable ({why}); used the typographic planner"),
        );
        Ok(plan)
    }

    /// Sends the conversation in each candidate mode until one is accepted and obeyed; `auto`
    /// remembers that mode for this server. An answer that ignores its constraint (a server
    /// that drops an unknown field) counts as a refusal, but is kept as a last resort.
    fn ask(
        &self,
        turns: &dyn Fn(bool) -> Vec<Turn>,
        keywords: &[String],
        seed: u64,
    ) -> Result<Answer, LayoutError> {
        let endpoint = self.config.endpoint();
        let auto = self.config.constrain == Constraint::Auto;
        let mut notes = Vec::new();
        let mut ignored: Option<Answer> = None;
        for mode in self.config.constrain.candidates(&endpoint) {
            let mut body = self.body(&turns(mode.is_json()), seed);
            mode.apply(&mut body, keywords);
            match self.send(&endpoint, &body, auto.then_some(mode)) {
                Ok(text) if auto && !obeyed(mode, &text, keywords) => {
                    notes.push(format!(
                        "the server ignored the {mode} constraint; trying the next mode"
                    ));
                    ignored.get_or_insert(Answer {
                        text,
                        mode,
                        notes: Vec::new(),
                    });
                }
                Ok(text) => {
                    if auto {
                        remember(&endpoint, mode);
                    }
                    return Ok(Answer { text, mode, notes });
                }
                Err(Failure::Refused(why)) => {
                    notes.push(format!(
                        "the server refused the {mode} constraint ({why}); trying the next mode"
                    ));
                }
                Err(Failure::Other(e)) => return Err(e),
            }
        }
        ignored
            .map(|a| Answer { notes, ..a })
            .ok_or_else(|| LayoutError::Llm {
                url: endpoint,
                message: "the server refused every constraint mode".into(),
            })
    }

    /// The request body for `turns`, without a constraint.
    fn body(&self, turns: &[Turn], seed: u64) -> Value {
        let c = &self.config;
        let mut body = json!({
            "model": c.model,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "seed": seed,
        });
        match c.api {
            LlmApi::Chat => {
                let messages: Vec<Value> = turns
                    .iter()
                    .map(|t| json!({"role": t.role, "content": t.content}))
                    .collect();
                body["messages"] = json!(messages);
            }
            LlmApi::Completions => {
                body["prompt"] = json!(vicuna_conversation(turns));
                body["stop"] = json!(["USER:", "</s>"]);
            }
        }
        body
    }

    /// Sends one request, retrying connection errors, 429 and 5xx with exponential backoff.
    /// With `refusable`, an error answer naming that mode's field is a refusal, not retried.
    fn send(
        &self,
        url: &str,
        body: &Value,
        refusable: Option<Constraint>,
    ) -> Result<String, Failure> {
        let c = &self.config;
        let err = |message: String| {
            Failure::Other(LayoutError::Llm {
                url: url.to_string(),
                message,
            })
        };
        let mut attempt = 0;
        loop {
            let mut request = self.agent.post(url);
            if let Some(key) = &c.api_key {
                request = request.header("Authorization", &format!("Bearer {key}"));
            }
            let (retry_after, failure) = match request.send_json(body) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = response
                        .body_mut()
                        .read_to_string()
                        .map_err(|e| err(format!("reading the answer: {e}")))?;
                    if (200..300).contains(&status) {
                        return extract_text(&text, c.api).map_err(err);
                    }
                    let failure = format!(
                        "HTTP {status}: {}",
                        text.chars().take(500).collect::<String>()
                    );
                    if refusable.is_some_and(|m| m.refused_by(status, &text)) {
                        return Err(Failure::Refused(failure));
                    }
                    if status != 429 && status < 500 {
                        return Err(err(failure));
                    }
                    (retry_after, failure)
                }
                Err(e) => (None, e.to_string()),
            };
            if attempt >= c.retries {
                return Err(err(format!("{failure} (after {} attempts)", attempt + 1)));
            }
            let backoff = retry_after
                .unwrap_or(0.5 * 2f64.powi(attempt as i32))
                .clamp(0.0, 30.0);
            tracing::warn!("LLM request failed ({failure}); retrying in {backoff:.1} s");
            std::thread::sleep(Duration::from_secs_f64(backoff));
            attempt += 1;
        }
    }
}

fn llm_plan(layout: Layout, planner: &str, seed: u64, warnings: Vec<String>) -> Plan {
    Plan {
        layout,
        planner: planner.into(),
        template: None,
        seed,
        font_px: Vec::new(),
        warnings,
    }
}

/// Whether an answer follows the constraint it was asked under.
fn obeyed(mode: Constraint, text: &str, keywords: &[String]) -> bool {
    match mode {
        Constraint::Grammar => obeys_grammar(text, keywords),
        m if m.is_json() => json_answer_as_td2(text, keywords).is_some(),
        _ => true,
    }
}

/// The answer parsed (a JSON answer read as TextDiffuser-2 text first), validated and repaired.
fn read_answer(answer: &Answer, keywords: &[String]) -> Parsed {
    let text = match answer.mode {
        m if m.is_json() => json_answer_as_td2(&answer.text, keywords),
        _ => None,
    };
    parse(text.as_deref().unwrap_or(&answer.text), keywords)
}

/// Whitespace runs as one space: the form an answer can spell a keyword in.
fn squash_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Keywords as a constraint lists them: spaces squashed, duplicates removed, order kept.
fn unique_keywords(keywords: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keywords.iter().map(|k| squash_spaces(k)) {
        if !k.is_empty() && !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// TextDiffuser-2's demo conversation for an edit: the planner prompt, the layout as the
/// assistant's answer (as JSON in the JSON modes), then the instruction.
fn edit_turns(
    prompt: &str,
    layout: &Layout,
    keywords: &[String],
    instruction: &str,
    json: bool,
) -> Vec<Turn> {
    let previous = if json {
        let boxes: serde_json::Map<String, Value> = crate::td2::grid_lines(layout)
            .into_iter()
            .map(|(t, g)| {
                (
                    t,
                    json!({"left": g.l, "top": g.t, "right": g.r, "bottom": g.b}),
                )
            })
            .collect();
        Value::Object(boxes).to_string()
    } else {
        crate::td2::serialize(layout)
    };
    let mut ask =
        format!("{instruction}. Keep every keyword, answer the whole layout in the same format.");
    if json {
        ask.push_str(JSON_INSTRUCTION);
    }
    vec![
        Turn {
            role: "user",
            content: planner_prompt(prompt, keywords),
        },
        Turn {
            role: "assistant",
            content: previous,
        },
        Turn {
            role: "user",
            content: ask,
        },
    ]
}

/// Turns in the vicuna v1.1 template (FastChat: `sep` " ", `sep2` "</s>"), ending with the
/// assistant's cue.
fn vicuna_conversation(turns: &[Turn]) -> String {
    if let [only] = turns {
        return vicuna_wrap(&only.content);
    }
    let mut out = format!("{} ", crate::td2::VICUNA_SYSTEM);
    for t in turns {
        match t.role {
            "assistant" => out.push_str(&format!("ASSISTANT: {}</s>", t.content)),
            _ => out.push_str(&format!("USER: {} ", t.content)),
        }
    }
    out.push_str("ASSISTANT:");
    out
}

/// The generated text from an OpenAI-style response body.
fn extract_text(body: &str, api: LlmApi) -> Result<String, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("answer is not JSON ({e}): {body:.200}"))?;
    let choice = &v["choices"][0];
    let text = match api {
        LlmApi::Chat => &choice["message"]["content"],
        LlmApi::Completions => &choice["text"],
    };
    text.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no generated text in the answer: {body:.300}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_roots_with_or_without_v1() {
        let mut c = LlmConfig::new("http://127.0.0.1:8000/", "m");
        assert_eq!(c.endpoint(), "http://127.0.0.1:8000/v1/chat/completions");
        c.base_url = "http://h/v1".into();
        c.api = LlmApi::Completions;
        assert_eq!(c.endpoint(), "http://h/v1/completions");
    }

    #[test]
    fn text_is_taken_from_either_response_shape() {
        let chat = r#"{"choices":[{"message":{"role":"assistant","content":"A 1,2,3,4"}}]}"#;
        assert_eq!(extract_text(chat, LlmApi::Chat).unwrap(), "A 1,2,3,4");
        let completion = r#"{"choices":[{"text":" A 1,2,3,4"}]}"#;
        assert_eq!(
            extract_text(completion, LlmApi::Completions).unwrap(),
            " A 1,2,3,4"
        );
        assert!(
            extract_text("{}", LlmApi::Chat)
                .unwrap_err()
                .contains("no generated text")
        );
        assert!(
            extract_text("<html>", LlmApi::Chat)
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
