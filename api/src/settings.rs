//! Service settings: defaults, then a TOML file, then `LETTERPRESS_*` environment variables
//! (each key upper-cased: `queue_capacity` ← `LETTERPRESS_QUEUE_CAPACITY`; lists are
//! comma-separated), then command-line flags, which the binary applies last.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Everything `letterpress serve` can be told. The README shows a full example file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// Where the job database and the generated files live. Default `letterpress-data`.
    pub data_dir: PathBuf,
    /// Diffusers-layout model folder (`unet/`, `controlnet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`). Default: none; `letterpress serve` then loads its embedded
    /// demo model (a server without an engine answers generations 503).
    pub model_dir: Option<PathBuf>,
    /// Device for the model: `cpu`, `cuda`, `cuda:N`. Default `cpu`.
    pub device: String,
    /// Base of the absolute URLs in answers (`https://posters.example.com`). Default: taken
    /// from the request's `Host` header.
    pub public_url: Option<String>,
    /// Jobs that may wait for the worker; more answer 429. Default 16.
    pub queue_capacity: usize,
    /// A job running longer fails with `timeout`. Default 600 s.
    pub job_timeout_secs: u64,
    /// On SIGTERM the running job gets this long to finish before it is stopped and requeued.
    /// Default 30 s.
    pub shutdown_grace_secs: u64,
    /// Generated files (images, masks, layouts) are deleted this long after creation.
    /// Default 7 days.
    pub file_ttl_secs: u64,
    /// Largest accepted request body. Default 1 MiB.
    pub max_body_bytes: usize,
    /// The longest `Prefer: wait=N` honoured. Default 60 s.
    pub max_wait_secs: u64,
    /// How long `POST /v1/images/generations` waits for its images. Default 600 s.
    pub openai_wait_secs: u64,
    /// Requests per minute per API key (per client address when keys are off); 0 = no limit.
    /// Default 600.
    pub rate_limit_per_minute: u32,
    /// SHA-256 hex digests of the accepted API keys (`printf %s "$KEY" | sha256sum`).
    /// Default: none, and the API is open.
    pub api_key_hashes: Vec<String>,
    /// Origins allowed by CORS; `"null"` admits Figma plug-ins, `"*"` any origin.
    /// Default: none (no CORS headers).
    pub cors_origins: Vec<String>,
    /// Font for planning and rendering. Default DejaVu Sans Bold.
    pub font: Option<String>,
    /// OpenAI-compatible server for `planner: "llm"`. Default: none (only the typographic planner).
    pub llm_url: Option<String>,
    /// Model name sent to the LLM server. Default `textdiffuser-2-planner`.
    pub llm_model: String,
    /// How the LLM's answer is constrained: `auto`, `grammar`, `json-schema`, `json-object`
    /// or `none` (docs/llm-planner.md). A request's `llm_constrain` overrides it. Default
    /// `auto`.
    pub llm_constrain: String,
    /// Worker step previews are PNGs of this longest side. Default 256.
    pub preview_side: u32,
    /// Largest width/height a generation may ask for (64–2048, a multiple of 8); lower it to
    /// cap the cost of a job on small machines. `/openapi.json` publishes it. Default 2048.
    pub max_side: u32,
    /// Most denoising steps a generation may ask for (1–150). Default 150.
    pub max_steps: u32,
    /// Most images per generation (1–8). Default 8.
    pub max_n: u32,
    /// Most pixel-steps one job may cost: width × height × denoising steps × images (with an
    /// init image, only the steps its strength runs). Bigger jobs are refused with a 400 that
    /// states the limit, so one request cannot hold the worker for long. Default by device:
    /// 512×512 at 30 steps on `cpu` ([`CPU_PIXEL_STEPS`]), 2048×2048 at 50 steps on a GPU
    /// ([`GPU_PIXEL_STEPS`]).
    pub max_pixel_steps: Option<u64>,
    /// A request head (request line and headers) must arrive within this long, or the
    /// connection is closed; the same limit closes idle keep-alive connections (1–300).
    /// Default 10 s.
    pub header_timeout_secs: u64,
    /// A request body must arrive within this long of its head, or the request is answered
    /// 408 (1–3600). Default 30 s.
    pub body_timeout_secs: u64,
    /// Client connections open at once; one more is answered 503 at once and closed
    /// (1–100000). Event streams hold a connection each. Default 256.
    pub max_connections: usize,
    /// NATS JetStream server (`nats://host:port`) that jobs, events and files go through,
    /// shared by any number of API nodes (`letterpress serve`, no model) and workers
    /// (`letterpress worker`); docs/scaling-out.md. Default: none, one process does it all.
    pub queue_url: Option<String>,
    /// With `queue_url`: the model name jobs are queued for (an API node), or served under (a
    /// worker). Default: an API node queues for the one model workers registered
    /// (`embedded` while none has); a worker serves under its model's folder name, or
    /// `embedded`.
    pub queue_model: Option<String>,
    /// With `queue_url`: a job whose worker has not reported progress for this long goes to
    /// another worker (1–3600). Default 30 s.
    pub queue_ack_wait_secs: u64,
}

/// The default job budget on a CPU: one 512×512 image at 30 steps (minutes on a few cores).
pub const CPU_PIXEL_STEPS: u64 = 512 * 512 * 30;
/// The default job budget on a GPU: one 2048×2048 image at 50 steps, or four 1024×1024.
pub const GPU_PIXEL_STEPS: u64 = 2048 * 2048 * 50;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("letterpress-data"),
            model_dir: None,
            device: "cpu".into(),
            public_url: None,
            queue_capacity: 16,
            job_timeout_secs: 600,
            shutdown_grace_secs: 30,
            file_ttl_secs: 7 * 24 * 3600,
            max_body_bytes: 1 << 20,
            max_wait_secs: 60,
            openai_wait_secs: 600,
            rate_limit_per_minute: 600,
            api_key_hashes: Vec::new(),
            cors_origins: Vec::new(),
            font: None,
            llm_url: None,
            llm_model: "textdiffuser-2-planner".into(),
            llm_constrain: "auto".into(),
            preview_side: 256,
            max_side: crate::input::MAX_SIDE,
            max_steps: crate::input::MAX_STEPS,
            max_n: crate::input::MAX_N,
            max_pixel_steps: None,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 256,
            queue_url: None,
            queue_model: None,
            queue_ack_wait_secs: 30,
        }
    }
}

/// Keys read from the environment, and whether each is a comma-separated list.
const KEYS: &[(&str, Kind)] = &[
    ("bind", Kind::Text),
    ("data_dir", Kind::Text),
    ("model_dir", Kind::Text),
    ("device", Kind::Text),
    ("public_url", Kind::Text),
    ("queue_capacity", Kind::Integer),
    ("job_timeout_secs", Kind::Integer),
    ("shutdown_grace_secs", Kind::Integer),
    ("file_ttl_secs", Kind::Integer),
    ("max_body_bytes", Kind::Integer),
    ("max_wait_secs", Kind::Integer),
    ("openai_wait_secs", Kind::Integer),
    ("rate_limit_per_minute", Kind::Integer),
    ("api_key_hashes", Kind::List),
    ("cors_origins", Kind::List),
    ("font", Kind::Text),
    ("llm_url", Kind::Text),
    ("llm_model", Kind::Text),
    ("llm_constrain", Kind::Text),
    ("preview_side", Kind::Integer),
    ("max_side", Kind::Integer),
    ("max_steps", Kind::Integer),
    ("max_n", Kind::Integer),
    ("max_pixel_steps", Kind::Integer),
    ("header_timeout_secs", Kind::Integer),
    ("body_timeout_secs", Kind::Integer),
    ("max_connections", Kind::Integer),
    ("queue_url", Kind::Text),
    ("queue_model", Kind::Text),
    ("queue_ack_wait_secs", Kind::Integer),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    List,
}

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Settings {
    /// The generation limits this server publishes and enforces.
    pub fn limits(&self) -> crate::input::Limits {
        crate::input::Limits {
            max_side: self.max_side,
            max_steps: self.max_steps,
            max_n: self.max_n,
            max_pixel_steps: self.pixel_steps_budget(),
        }
    }

    /// `max_pixel_steps`, or the default for the device.
    pub fn pixel_steps_budget(&self) -> u64 {
        self.max_pixel_steps
            .unwrap_or(if self.device.starts_with("cuda") {
                GPU_PIXEL_STEPS
            } else {
                CPU_PIXEL_STEPS
            })
    }

    /// Defaults, overlaid by `file` (when given) and by `LETTERPRESS_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| SettingsError::Invalid {
                        origin: path.display().to_string(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut origin = file.map_or("settings".to_string(), |p| p.display().to_string());
        for (name, value) in env {
            let Some(key) = name.strip_prefix("LETTERPRESS_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let Some((key, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let parsed = match kind {
                Kind::Text => toml::Value::String(value),
                Kind::Integer => toml::Value::Integer(value.trim().parse().map_err(|_| {
                    SettingsError::Invalid {
                        origin: name.clone(),
                        message: format!("{value:?} is not a whole number"),
                    }
                })?),
                Kind::List => toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
            };
            table.insert(key.to_string(), parsed);
            origin = format!("{origin} with LETTERPRESS_* variables");
        }
        let settings: Settings =
            table
                .try_into()
                .map_err(|e: toml::de::Error| SettingsError::Invalid {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
        settings
            .check()
            .map_err(|message| SettingsError::Invalid { origin, message })?;
        Ok(settings)
    }

    /// Values that parse but cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.queue_capacity == 0 {
            return Err("queue_capacity must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes must be at least 1024".into());
        }
        if self.preview_side < 16 {
            return Err("preview_side must be at least 16".into());
        }
        use crate::input::{MAX_N, MAX_SIDE, MAX_STEPS, MIN_SIDE, SIDE_MULTIPLE};
        if !(MIN_SIDE..=MAX_SIDE).contains(&self.max_side) || self.max_side % SIDE_MULTIPLE != 0 {
            return Err(format!(
                "max_side must be {MIN_SIDE} to {MAX_SIDE} and a multiple of {SIDE_MULTIPLE}"
            ));
        }
        if !(1..=MAX_STEPS).contains(&self.max_steps) {
            return Err(format!("max_steps must be 1 to {MAX_STEPS}"));
        }
        if !(1..=MAX_N).contains(&self.max_n) {
            return Err(format!("max_n must be 1 to {MAX_N}"));
        }
        let smallest = u64::from(MIN_SIDE * MIN_SIDE);
        if self.max_pixel_steps.is_some_and(|b| b < smallest) {
            return Err(format!(
                "max_pixel_steps must be at least {smallest} (one {MIN_SIDE}x{MIN_SIDE} image at one step)"
            ));
        }
        if !(1..=300).contains(&self.header_timeout_secs) {
            return Err("header_timeout_secs must be 1 to 300".into());
        }
        if !(1..=3600).contains(&self.body_timeout_secs) {
            return Err("body_timeout_secs must be 1 to 3600".into());
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err("max_connections must be 1 to 100000".into());
        }
        if !(1..=3600).contains(&self.queue_ack_wait_secs) {
            return Err("queue_ack_wait_secs must be 1 to 3600".into());
        }
        if let Some(url) = &self.queue_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(format!(
                "queue_url: {url:?} is not a NATS URL (nats://host:port)"
            ));
        }
        if self
            .queue_model
            .as_deref()
            .is_some_and(|m| m.trim().is_empty())
        {
            return Err("queue_model must not be empty".into());
        }
        self.llm_constrain
            .parse::<letterpress_layout::Constraint>()
            .map_err(|e| format!("llm_constrain: {e}"))?;
        for h in &self.api_key_hashes {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "api_key_hashes: {h:?} is not a SHA-256 hex digest (64 hex digits; \
                     `printf %s \"$KEY\" | sha256sum`)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = std::env::temp_dir().join(format!("lp-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("letterpress.toml");
        std::fs::write(
            &path,
            "queue_capacity = 3\ncors_origins = [\"null\"]\nbind = \"0.0.0.0:9000\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[
                ("LETTERPRESS_QUEUE_CAPACITY", "5"),
                ("LETTERPRESS_LOG", "debug"),
                ("HOME", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.queue_capacity, 5);
        assert_eq!(s.cors_origins, ["null"]);
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.max_wait_secs, 60);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("lp-settings-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "queue_capacty = 3\n").unwrap();
        let e = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue_capacty"), "{e}");
        let e = Settings::load(None, env(&[("LETTERPRESS_QUEUE_CAPACITY", "many")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LETTERPRESS_QUEUE_CAPACITY") && e.contains("many"),
            "{e}"
        );
        let e = Settings::load(None, env(&[("LETTERPRESS_API_KEY_HASHES", "abc")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHA-256"), "{e}");
    }

    #[test]
    fn connection_limits_must_be_usable() {
        for (key, value) in [
            ("LETTERPRESS_HEADER_TIMEOUT_SECS", "0"),
            ("LETTERPRESS_BODY_TIMEOUT_SECS", "86400"),
            ("LETTERPRESS_MAX_CONNECTIONS", "0"),
        ] {
            let e = Settings::load(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            let setting = key["LETTERPRESS_".len()..].to_ascii_lowercase();
            assert!(e.contains(&setting), "{e}");
        }
        let s = Settings::load(None, env(&[("LETTERPRESS_MAX_CONNECTIONS", "8")])).unwrap();
        assert_eq!((s.max_connections, s.header_timeout_secs), (8, 10));
    }
}
