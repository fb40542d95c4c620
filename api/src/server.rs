//! Running the service: bind, serve, and shut down gracefully on SIGTERM or Ctrl-C (stop
//! accepting, let the running job finish within the grace period or requeue it, end
//! long-lived responses, close the store). Connections themselves are src/connections.rs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::EngineLoader;
use crate::settings::Settings;
use crate::state::{AppState, EditCheck, Shared, StartError};
use crate::{connections, worker};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("the model did not load: {0}")]
    Model(String),
}

/// Serves until SIGTERM/SIGINT. `loader` builds the diffusion engine on the worker thread;
/// without one, generations answer 503.
pub async fn serve(settings: Settings, loader: Option<EngineLoader>) -> Result<(), ServeError> {
    serve_checked(settings, loader, None).await
}

/// [`serve`] with an [`EditCheck`]: edits OCR cannot make are refused with a 400 before a job
/// exists.
pub async fn serve_checked(
    settings: Settings,
    loader: Option<EngineLoader>,
    edit_check: Option<EditCheck>,
) -> Result<(), ServeError> {
    let addr = settings.bind;
    let state = Shared::new(settings)?;
    if let Some(check) = edit_check {
        let _ = state.edit_check.set(check);
    }
    // A scaled-out API node holds no model: workers elsewhere take its jobs from the queue.
    let worker = match state.store.nats() {
        None => Some(worker::spawn(state.clone(), loader)),
        Some(_) => {
            tokio::spawn(crate::queue::watch_models(state.clone()));
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    // Scripts and tests read this line to learn the port (with --bind 127.0.0.1:0).
    println!("listening on http://{local}");
    tracing::info!(%local, "listening");

    let sweeper = tokio::spawn(sweep_files(state.clone()));
    let signal_state = state.clone();
    let shutdown = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests; the running job gets the grace period");
        drain(&signal_state);
    };
    connections::serve_with(listener, state.clone(), shutdown).await;
    sweeper.abort();
    state.wake_worker();
    if let Some(worker) = worker {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// After SIGTERM: take no new job, end long-lived responses, and give the running job the
/// grace period before it is stopped and handed back.
fn drain(state: &AppState) {
    state.draining.store(true, Ordering::Relaxed);
    let _ = state.shutdown.send(true);
    let grace = Duration::from_secs(state.settings.shutdown_grace_secs);
    let interrupt = state.interrupt.clone();
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        interrupt.store(true, Ordering::Relaxed);
    });
}

/// A worker of a scaled-out service (`queue_url`): loads the model, pulls its jobs from NATS
/// and runs them until SIGTERM, when it finishes the running job within the grace period or
/// hands it back, and takes no new one.
pub async fn work(settings: Settings, loader: EngineLoader) -> Result<(), ServeError> {
    let state = Shared::new(settings)?;
    let worker = worker::spawn(state.clone(), Some(loader));
    let mut done = tokio::task::spawn_blocking(move || worker.join());
    tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("shutting down: no new jobs; the running job gets the grace period");
            drain(&state);
            let _ = done.await;
        }
        _ = &mut done => {}
    }
    if let crate::state::ModelState::Failed(message) = state.model_state() {
        return Err(ServeError::Model(message));
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Deletes expired files every minute (and once at start), and drops idle event channels.
async fn sweep_files(state: crate::state::AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let s = state.clone();
        match tokio::task::spawn_blocking(move || {
            s.store.delete_expired_files(crate::store::now_ms())
        })
        .await
        {
            Ok(Ok(n)) if n > 0 => tracing::info!(files = n, "expired files deleted"),
            Ok(Err(e)) => tracing::error!(error = %e, "deleting expired files"),
            _ => {}
        }
        state.hub.prune();
    }
}
