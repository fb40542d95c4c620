//! Live job events. The worker stores each event (so late listeners and restarts can replay
//! them) and then broadcasts it here; SSE streams and waiting requests subscribe per job.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::broadcast;

/// An event as streamed: the stored part plus what is too big to store (step previews).
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub seq: i64,
    pub kind: String,
    pub data: Value,
}

impl LiveEvent {
    pub fn is_terminal(&self) -> bool {
        is_terminal_kind(&self.kind)
    }
}

pub fn is_terminal_kind(kind: &str) -> bool {
    crate::store::TERMINAL_EVENTS.contains(&kind)
}

#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<LiveEvent>>>,
}

/// Events a slow listener may fall behind by before it skips ahead (it then replays from the
/// store).
const CHANNEL_CAPACITY: usize = 256;

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<LiveEvent>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self, job_id: &str) -> broadcast::Receiver<LiveEvent> {
        self.lock()
            .entry(job_id.to_string())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    pub fn publish(&self, job_id: &str, event: LiveEvent) {
        let mut channels = self.lock();
        if let Some(tx) = channels.get(job_id) {
            let terminal = event.is_terminal();
            let _ = tx.send(event);
            if terminal {
                channels.remove(job_id);
            }
        }
    }

    /// Drops channels nobody listens to any more.
    pub fn prune(&self) {
        self.lock().retain(|_, tx| tx.receiver_count() > 0);
    }
}
