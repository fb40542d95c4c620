//! The LLM planner: asks any OpenAI-compatible server (vLLM, llama.cpp, OpenAI) for a
//! TextDiffuser-2-format layout, parses what comes back, and falls back to the typographic
//! planner when the answer is unusable.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Plan, TypographicPlanner};
use crate::td2::{parse, planner_prompt, vicuna_wrap};
use crate::{LayoutError, TextMeasure};

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
    typographic: TypographicPlanner<'m>,
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
        let answer = match self.complete(&planner_prompt(prompt, keywords), seed) {
            Ok(answer) => answer,
            Err(e) if !self.config.strict => {
                return self.fallback(keywords, width, height, seed, format!("{e}"));
            }
            Err(e) => return Err(e),
        };
        let parsed = parse(&answer, keywords);
        if parsed.lines.is_empty() {
            let reason = "no line with a text and four coordinates".to_string();
            if self.config.strict {
                return Err(LayoutError::UnusableAnswer {
                    reason,
                    raw: answer,
                });
            }
            let mut plan = self.fallback(
                keywords,
                width,
                height,
                seed,
                format!("the answer held {reason}"),
            )?;
            plan.warnings.extend(parsed.warnings);
            return Ok(plan);
        }
        let mut layout = parsed.to_layout(width, height);
        let mut warnings = parsed.warnings.clone();
        let missing = parsed.missing_keywords(keywords);
        let planner = if missing.is_empty() {
            "llm"
        } else {
            warnings.extend(
                self.typographic
                    .place_missing(&mut layout, &missing, seed)?,
            );
            "llm+typographic"
        };
        tracing::debug!(lines = layout.lines.len(), planner, "LLM layout parsed");
        Ok(Plan {
            layout,
            planner: planner.into(),
            template: None,
            seed,
            font_px: Vec::new(),
            warnings,
        })
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

    /// Sends one request, retrying connection errors, 429 and 5xx with exponential backoff.
    fn complete(&self, message: &str, seed: u64) -> Result<String, LayoutError> {
        let c = &self.config;
        let url = c.endpoint();
        let mut body = json!({
            "model": c.model,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "seed": seed,
        });
        match c.api {
            LlmApi::Chat => body["messages"] = json!([{"role": "user", "content": message}]),
            LlmApi::Completions => {
                body["prompt"] = json!(vicuna_wrap(message));
                body["stop"] = json!(["USER:", "</s>"]);
            }
        }
        let err = |message: String| LayoutError::Llm {
            url: url.clone(),
            message,
        };
        let mut attempt = 0;
        loop {
            let mut request = self.agent.post(&url);
            if let Some(key) = &c.api_key {
                request = request.header("Authorization", &format!("Bearer {key}"));
            }
            let (retry_after, failure) = match request.send_json(&body) {
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
