//! What every handler and the worker share.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use letterpress_layout::LlmConfig;
use letterpress_render::{MissingGlyph, RenderOptions, Renderer};

use crate::engine::EngineInfo;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// Whether generations can run.
#[derive(Debug, Clone)]
pub enum ModelState {
    /// No model configured: generations answer 503 with how to give one.
    Absent,
    Loading,
    /// A scaled-out API node with no `queue_model` before any worker registered a model:
    /// it cannot tell which model's queue a job belongs in yet.
    AwaitingWorker,
    Ready(EngineInfo),
    /// Loading failed; the reason is logged, the message says where to look.
    Failed(String),
}

pub struct Shared {
    pub settings: Settings,
    pub store: Store,
    /// Planning and rendering share one renderer (it is `Sync` and caches glyphs).
    pub renderer: Renderer,
    pub llm: Option<LlmConfig>,
    pub hub: Hub,
    pub metrics: Metrics,
    pub model: RwLock<ModelState>,
    /// Cancel flags of started jobs, by id.
    pub cancel_flags: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Set on SIGTERM: the worker takes no new job.
    pub draining: AtomicBool,
    /// Set when the shutdown grace period is over: the running job stops and is requeued.
    pub interrupt: Arc<AtomicBool>,
    /// Wakes the worker when a job is queued.
    pub wake: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    pub limiter: RateLimiter,
    pub key_hashes: HashSet<String>,
    /// Flips to true on shutdown so long-lived responses (SSE, waits) end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The edit check the binary provides (OCR and fitting, which this crate does not link):
    /// `POST /v1/edits` runs it before a job exists. Unset: those checks wait for the worker.
    pub edit_check: std::sync::OnceLock<EditCheck>,
    /// A scaled-out API node's queue per model, as its registry watch last read it (so
    /// `/readyz` and `/metrics` cost no NATS round trip); `None` in a single process.
    pub queues: RwLock<Option<Vec<crate::schema::ModelQueue>>>,
}

/// Why an edit cannot be made: the request field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct EditRefusal {
    pub field: String,
    pub message: String,
}

/// Checks an edit of a picture (`old`, `new` pairs) as the engine will make it, without
/// painting: `Err` names the field. Runs on a blocking thread.
pub type EditCheck =
    Arc<dyn Fn(&image::RgbImage, &[(String, String)]) -> Result<(), EditRefusal> + Send + Sync>;

pub type AppState = Arc<Shared>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("renderer: {0}")]
    Render(#[from] letterpress_render::RenderError),
}

impl Shared {
    /// Opens the store (recovering jobs a crash interrupted) and the renderer.
    pub fn new(settings: Settings) -> Result<AppState, StartError> {
        let store = open_store(&settings)?;
        let recovered = store.recover_interrupted(MAX_ATTEMPTS)?;
        let interrupted =
            recovered.requeued.len() + recovered.failed.len() + recovered.canceled.len();
        if interrupted > 0 {
            tracing::warn!(
                requeued = recovered.requeued.len(),
                failed = recovered.failed.len(),
                canceled = recovered.canceled.len(),
                "jobs interrupted by the last shutdown or crash"
            );
        }
        let mut options = RenderOptions {
            // Services report glyphs no font has as warnings rather than failing the request.
            missing_glyph: MissingGlyph::Skip,
            ..Default::default()
        };
        if let Some(font) = &settings.font {
            options.font = font.clone();
        }
        let renderer = Renderer::new(options)?;
        let llm = settings
            .llm_url
            .as_deref()
            .map(|url| llm_config(url, &settings.llm_model, &settings.llm_constrain));
        let key_hashes = settings
            .api_key_hashes
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let limiter = RateLimiter::new(settings.rate_limit_per_minute);
        let state = Arc::new(Shared {
            settings,
            store,
            renderer,
            llm,
            hub: Hub::default(),
            metrics: Metrics::default(),
            model: RwLock::new(ModelState::Absent),
            cancel_flags: Mutex::default(),
            draining: AtomicBool::new(false),
            interrupt: Arc::default(),
            wake: Mutex::new(None),
            limiter,
            key_hashes,
            shutdown: tokio::sync::watch::channel(false).0,
            edit_check: std::sync::OnceLock::new(),
            queues: RwLock::new(None),
        });
        crate::job_events::emit_recovered(&state, &recovered);
        if let Some(nats) = state.store.nats() {
            crate::queue::forward_to(&state, nats);
        }
        Ok(state)
    }

    /// The loaded model's scheduler names (its own first); none while no model is ready, when
    /// request parsing accepts any name and the 503 comes later.
    pub fn schedulers(&self) -> Vec<String> {
        match self.model_state() {
            ModelState::Ready(info) => info.schedulers,
            _ => Vec::new(),
        }
    }

    pub fn model_state(&self) -> ModelState {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn queues(&self) -> Option<Vec<crate::schema::ModelQueue>> {
        self.queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_model_state(&self, state: ModelState) {
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn wake_worker(&self) {
        if let Some(tx) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(());
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// SQLite in `data_dir`, or the JetStream resources at `queue_url`.
fn open_store(settings: &Settings) -> Result<Store, StoreError> {
    let Some(url) = &settings.queue_url else {
        return Store::open(&settings.data_dir);
    };
    let options = crate::store::nats::NatsOptions {
        url: url.clone(),
        client_name: format!("letterpress {}", std::process::id()),
        file_ttl: std::time::Duration::from_secs(settings.file_ttl_secs),
        ack_wait: std::time::Duration::from_secs(settings.queue_ack_wait_secs),
        max_deliveries: MAX_ATTEMPTS,
    };
    crate::store::nats::NatsStore::connect(options).map(Store::Nats)
}

/// A job is started at most this often: a crash during its first run requeues it, a crash
/// during the second fails it with `interrupted` (so a job that kills the process cannot loop).
pub const MAX_ATTEMPTS: u32 = 2;

/// The LLM planner's configuration from the service settings: a request waits at most a
/// minute for the planner's server. `constrain` was checked with the settings.
fn llm_config(url: &str, model: &str, constrain: &str) -> LlmConfig {
    let mut config = LlmConfig::new(url, model);
    config.timeout = std::time::Duration::from_secs(60);
    config.constrain = constrain.parse().unwrap_or_default();
    config
}
