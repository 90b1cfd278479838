//! What every handler shares: the request limits and the model's readiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::reload::ModelStatus;
use crate::batch::{BadRecords, ExecutionParameters};
use crate::codec::OutputFormat;
use crate::engine::LoadedModel;
use crate::monitor::{Live, Metrics};

#[derive(Clone)]
pub enum Readiness {
    Loading(String),
    Ready(Arc<LoadedModel>),
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub max_payload_bytes: usize,
    pub timeout: Duration,
    pub default_accept: OutputFormat,
    /// A CSV or JSON Lines body with no Accept or */* is answered in its own format, one line
    /// per record (Batch Transform mode with no default accept set, see `media::line_answer`).
    pub answer_like_input: bool,
    pub default_content_type: String,
    pub execution_parameters: ExecutionParameters,
    pub bad_records: BadRecords,
    /// Line-oriented bodies are scored as they arrive (Batch Transform mode, see `stream`).
    pub stream_bodies: bool,
    /// ...with no size limit (`MaxPayloadInMB=0`).
    pub unbounded_bodies: bool,
    /// Bytes of request bodies that may be held at once, summed over requests.
    pub body_memory_bytes: usize,
    /// Longest wait for the next bytes of a body; a client that stalls longer gets 408.
    pub body_idle_timeout: Duration,
    /// Size of the pieces large bodies are scored in (`stream`).
    pub chunk_bytes: usize,
}

pub struct AppState {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    // Written once or twice in the process's life, read by every request: the read lock is
    // held only to clone an Arc, never across inference, so /ping never waits on a model.
    readiness: RwLock<Readiness>,
    status: Mutex<ModelStatus>,
    /// Set on SIGTERM: answers then close their connections (see `server`).
    draining: AtomicBool,
    /// Bodies being read or held, in permits of 1 KiB (`body_memory_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The prediction-job portal, when it is on.
    pub portal: std::sync::OnceLock<Arc<crate::portal::Portal>>,
    /// Why the portal, which is on, cannot answer yet (starting, or its start failed).
    portal_wait: Mutex<Option<String>>,
    /// Prediction capture (`--capture-uri`).
    pub capture: Option<Arc<crate::monitor::capture::Capture>>,
    /// Many named models (multi-model mode); None when the server serves one.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// The shadow challenger, once it is loaded (`--shadow-model-uri`).
    pub shadow: std::sync::OnceLock<Arc<crate::monitor::shadow::Shadow>>,
}

impl AppState {
    pub fn new(settings: Settings, readiness: Readiness, metrics: Arc<Metrics>) -> Self {
        // Permits of 1 KiB (see `invocations::BodyRead`).
        let budget = (settings.body_memory_bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            settings,
            metrics,
            readiness: RwLock::new(readiness),
            status: Mutex::new(ModelStatus::default()),
            draining: AtomicBool::new(false),
            portal: std::sync::OnceLock::new(),
            portal_wait: Mutex::new(None),
            capture: None,
            registry: None,
            shadow: std::sync::OnceLock::new(),
        }
    }

    pub fn with_registry(mut self, registry: Option<Arc<crate::registry::Registry>>) -> Self {
        self.registry = registry;
        self
    }

    pub fn with_capture(mut self, capture: Option<Arc<crate::monitor::capture::Capture>>) -> Self {
        self.capture = capture;
        self
    }

    pub fn portal_waiting(&self, why: &str) {
        if let Ok(mut w) = self.portal_wait.lock() {
            *w = Some(why.to_string());
        }
    }

    /// Why the portal is not there: None when it is off.
    pub fn portal_wait(&self) -> Option<String> {
        self.portal_wait.lock().ok().and_then(|w| w.clone())
    }

    pub fn set(&self, r: Readiness) {
        drop(self.swap(r));
    }

    /// Sets the readiness and hands back the one it replaced (a reload retires the old model).
    pub fn swap(&self, r: Readiness) -> Readiness {
        let mut guard = match self.readiness.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *guard, r)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The model's version and reload history.
    pub fn status(&self) -> ModelStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut ModelStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The current readiness (an Arc or a reason cloned out; the lock is not held after).
    pub fn readiness(&self) -> Readiness {
        let guard = match self.readiness.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.clone()
    }

    /// The model if it is ready, else why not.
    pub fn model(&self) -> Result<Arc<LoadedModel>, String> {
        match self.readiness() {
            Readiness::Ready(m) => Ok(m),
            Readiness::Loading(why) | Readiness::Failed(why) => Err(why),
        }
    }

    /// The values metrics read from the live server.
    pub fn live(&self) -> Live {
        // Many models: the process is ready while it lives; the counts are every model's.
        if let Some(r) = &self.registry {
            return r.models().iter().fold(
                Live {
                    ready: true,
                    ..Live::default()
                },
                |l, m| Live {
                    ready: true,
                    in_flight: l.in_flight + m.engine.in_flight(),
                    queue_depth: l.queue_depth + m.engine.queue_depth(),
                    queue_capacity: l.queue_capacity + m.engine.policy().capacity,
                },
            );
        }
        match self.readiness() {
            Readiness::Ready(m) => Live {
                ready: true,
                in_flight: m.engine.in_flight(),
                queue_depth: m.engine.queue_depth(),
                queue_capacity: m.engine.policy().capacity,
            },
            _ => Live::default(),
        }
    }
}
