//! Many named models in one server: SageMaker's multi-model endpoints (`/models`) and a model
//! repository. Name → loaded model, each with its own sessions, batching queue and metrics.
//!
//! The map is held under one lock only to look up, insert or remove a slot, never across a
//! fetch, a load or inference. A load runs on a thread of its own; requests for a model being
//! loaded wait for it. Models are unloaded least recently used when a new one would pass the
//! memory budget, and an unloaded model is freed only once the requests holding it end
//! (bounded by the drain time), so no request fails because of an unload.

pub mod args;
mod memory;
pub mod repository;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ort::environment::Environment;
use serde::Serialize;
use tokio::sync::watch;

pub use args::RegistryArgs;
pub use memory::estimate;
use repository::{entry_name, valid_name, Repository};

use crate::engine::{self, LoadOptions, LoadedModel};
use crate::model::fetch::{Fetcher, SourceOptions};
use crate::monitor::metrics::Histogram;
use crate::monitor::Metrics;

#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("model {0:?} is already loaded; unload it first (DELETE /models/{0})")]
    Conflict(String),
    #[error("model {name:?} needs about {needs_mib:.1} MiB and the models' memory budget is {budget_mib:.1} MiB (--model-memory-mb){why}")]
    Memory {
        name: String,
        needs_mib: f64,
        budget_mib: f64,
        why: &'static str,
    },
    #[error("model {name:?} failed to load from {url}: {why}")]
    Load {
        name: String,
        url: String,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the server is shutting down")]
    Closed,
}

impl RegistryError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            // SageMaker unloads unused models when a load answers 507.
            Self::Memory { .. } => 507,
            Self::Load { .. } | Self::Invalid(_) => 400,
            Self::Closed => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "model_not_found",
            Self::Conflict(_) => "model_already_loaded",
            Self::Memory { .. } => "insufficient_memory",
            Self::Load { .. } => "model_load_failed",
            Self::Invalid(_) => "invalid_model_request",
            Self::Closed => "not_ready",
        }
    }
}

/// What a load needs besides the model's URI.
pub struct LoadContext {
    pub env: &'static Environment,
    pub opts: LoadOptions,
    pub sources: SourceOptions,
    pub metrics: Arc<Metrics>,
    pub monitor: crate::monitor::setup::MonitorArgs,
    pub s3: crate::storage::S3Options,
}

/// One loaded model and what the `/models` API says of it.
pub struct Entry {
    pub name: String,
    pub url: String,
    /// Swapped when a repository poll finds a new version; requests clone the Arc.
    model: RwLock<Arc<LoadedModel>>,
    version: Mutex<String>,
    fetcher: Fetcher,
    /// The memory estimate charged to the budget.
    bytes: u64,
    last_used: AtomicU64,
    invocations: AtomicU64,
    loaded_at: SystemTime,
}

impl Entry {
    pub fn model(&self) -> Arc<LoadedModel> {
        Arc::clone(&self.model.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn version(&self) -> String {
        lock(&self.version).clone()
    }
}

/// What `get` does next, decided under the lock.
enum Step {
    Ready(Arc<LoadedModel>),
    Wait(watch::Receiver<Option<Result<(), RegistryError>>>),
    Find,
}

enum Slot {
    /// Being fetched and loaded; waiters see the outcome on the channel.
    Loading(watch::Receiver<Option<Result<(), RegistryError>>>),
    Ready(Arc<Entry>),
}

struct Inner {
    slots: HashMap<String, Slot>,
    /// Estimated bytes of the models loaded and being loaded.
    used: u64,
    closed: bool,
}

/// Counters of the registry's life, for `/metrics`.
struct Counters {
    loads_ok: AtomicU64,
    loads_failed: AtomicU64,
    unloads: AtomicU64,
    evictions: AtomicU64,
    /// Invocations that found their model loaded, and those that had to load it first
    /// (SageMaker's ModelCacheHit).
    hits: AtomicU64,
    misses: AtomicU64,
    load_seconds: Histogram,
}

pub struct Registry {
    inner: Mutex<Inner>,
    budget: u64,
    clock: AtomicU64,
    ctx: LoadContext,
    repository: Option<Repository>,
    /// How long an unload waits for the requests holding the model.
    drain: Duration,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `GET /models` and `GET /models/{name}`, in SageMaker's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Described {
    pub model_name: String,
    pub model_url: String,
    pub version: String,
    pub memory_estimate_bytes: u64,
    pub invocations: u64,
    pub loaded_at_unix: f64,
    pub kind: &'static str,
    pub provider: &'static str,
}

impl Registry {
    pub fn new(ctx: LoadContext, args: &RegistryArgs, drain: Duration) -> Result<Self, String> {
        let repository = match &args.model_repository {
            Some(uri) => Some(Repository::new(uri, ctx.s3.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                used: 0,
                closed: false,
            }),
            budget: args.memory_budget_bytes(),
            clock: AtomicU64::new(0),
            ctx,
            repository,
            drain,
            counters: Counters {
                loads_ok: AtomicU64::new(0),
                loads_failed: AtomicU64::new(0),
                unloads: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                load_seconds: Histogram::new(crate::monitor::metrics::SECONDS),
            },
        })
    }

    pub fn repository(&self) -> Option<&str> {
        self.repository.as_ref().map(Repository::uri)
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// `POST /models`: loads `url` as `name`; 409 when the name is taken (loaded or loading).
    pub async fn load(self: &Arc<Self>, name: &str, url: &str) -> Result<(), RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::Invalid(format!(
                "model_name {name:?} is not a valid name: use letters, digits, '.', '_' and '-' (at most 256)"
            )));
        }
        if url.trim().is_empty() {
            return Err(RegistryError::Invalid("url is empty".into()));
        }
        let rx = {
            let mut inner = lock(&self.inner);
            if inner.closed {
                return Err(RegistryError::Closed);
            }
            if inner.slots.contains_key(name) {
                return Err(RegistryError::Conflict(name.to_string()));
            }
            self.start_load(&mut inner, name, url)?
        };
        wait(rx).await
    }

    /// Starts a load in the slot `name` (free: the caller checked under the same lock).
    fn start_load(
        self: &Arc<Self>,
        inner: &mut Inner,
        name: &str,
        url: &str,
    ) -> Result<watch::Receiver<Option<Result<(), RegistryError>>>, RegistryError> {
        let (tx, rx) = watch::channel(None);
        inner
            .slots
            .insert(name.to_string(), Slot::Loading(rx.clone()));
        let (me, owned, url) = (Arc::clone(self), name.to_string(), url.to_string());
        let spawned = std::thread::Builder::new()
            .name("mlapp-model-load".into())
            .spawn(move || {
                let outcome = me.load_now(&owned, &url);
                let _ = tx.send(Some(outcome));
            });
        if let Err(e) = spawned {
            inner.slots.remove(name);
            return Err(RegistryError::Invalid(format!(
                "cannot start a thread to load model {name:?}: {e}"
            )));
        }
        Ok(rx)
    }

    /// Fetches, charges the budget (unloading least recently used models to make room),
    /// loads and warms up; runs on the load's own thread.
    fn load_now(self: &Arc<Self>, name: &str, url: &str) -> Result<(), RegistryError> {
        let started = Instant::now();
        let failed = |why: String| RegistryError::Load {
            name: name.to_string(),
            url: url.to_string(),
            why,
        };
        let outcome = (|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| failed(format!("cannot start a runtime: {e}")))?;
            let fetcher =
                Fetcher::new(url, self.ctx.sources.clone()).map_err(|e| failed(e.to_string()))?;
            let fetched = rt
                .block_on(fetcher.fetch())
                .map_err(|e| failed(e.to_string()))?;
            let bytes = estimate(&fetched.dir, self.ctx.opts.sessions.max(1));
            let evicted = self.charge(name, bytes)?;
            for old in evicted {
                self.retire(old, "to make room");
            }
            let model = match self.build(&rt, &fetched.dir, name) {
                Ok(m) => m,
                Err(e) => {
                    lock(&self.inner).used -= bytes;
                    return Err(failed(e));
                }
            };
            Ok(Entry {
                name: name.to_string(),
                url: url.to_string(),
                model: RwLock::new(Arc::new(model)),
                version: Mutex::new(fetched.version),
                fetcher,
                bytes,
                last_used: AtomicU64::new(self.tick()),
                invocations: AtomicU64::new(0),
                loaded_at: SystemTime::now(),
            })
        })();
        let took = started.elapsed();
        let mut inner = lock(&self.inner);
        match outcome {
            Ok(entry) => {
                self.counters.loads_ok.fetch_add(1, Relaxed);
                self.counters.load_seconds.observe_duration(took);
                log::info!(
                    "model {name:?} loaded from {url} in {:.3} s (about {:.1} MiB; {:.1} of {:.1} MiB in use)",
                    took.as_secs_f64(),
                    mib(entry.bytes),
                    mib(inner.used),
                    mib(self.budget)
                );
                inner
                    .slots
                    .insert(name.to_string(), Slot::Ready(Arc::new(entry)));
                Ok(())
            }
            Err(e) => {
                self.counters.loads_failed.fetch_add(1, Relaxed);
                log::warn!("{e}");
                inner.slots.remove(name);
                Err(e)
            }
        }
    }

    /// Loads and warms up the model in `dir` under `name`, with its live monitor.
    fn build(
        &self,
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        name: &str,
    ) -> Result<LoadedModel, String> {
        let ctx = &self.ctx;
        let mut m = engine::load(ctx.env, dir, &ctx.opts, Arc::clone(&ctx.metrics))
            .map_err(|e| e.to_string())?;
        m.name = Arc::from(name);
        m.monitor = ctx
            .monitor
            .attach(&m, rt, &ctx.s3)
            .map_err(|e| e.to_string())?;
        Ok(m)
    }

    /// Charges `bytes` for the model `name` to the budget, unloading the least recently used
    /// ready models until it fits; the models taken out are handed back to be retired.
    fn charge(&self, name: &str, bytes: u64) -> Result<Vec<Arc<Entry>>, RegistryError> {
        let refuse = |why| RegistryError::Memory {
            name: name.to_string(),
            needs_mib: mib(bytes),
            budget_mib: mib(self.budget),
            why,
        };
        if bytes > self.budget {
            return Err(refuse(""));
        }
        let mut inner = lock(&self.inner);
        let mut ready: Vec<(u64, String)> = inner
            .slots
            .iter()
            .filter_map(|(n, s)| match s {
                Slot::Ready(e) => Some((e.last_used.load(Relaxed), n.clone())),
                Slot::Loading(_) => None,
            })
            .collect();
        ready.sort();
        let needed = (inner.used + bytes).saturating_sub(self.budget);
        let freeable: u64 = ready
            .iter()
            .filter_map(|(_, n)| match inner.slots.get(n) {
                Some(Slot::Ready(e)) => Some(e.bytes),
                _ => None,
            })
            .sum();
        if needed > freeable {
            // The rest is held by models still loading.
            return Err(refuse(
                "; the rest of the budget is taken by models being loaded, retry shortly",
            ));
        }
        let mut evicted = Vec::new();
        for (_, n) in ready {
            if inner.used + bytes <= self.budget {
                break;
            }
            if let Some(Slot::Ready(e)) = inner.slots.remove(&n) {
                inner.used -= e.bytes;
                self.counters.evictions.fetch_add(1, Relaxed);
                evicted.push(e);
            }
        }
        inner.used += bytes;
        Ok(evicted)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Relaxed) + 1
    }

    /// The model `name` for one request; a model being loaded is waited for. With a
    /// repository, a name not loaded yet is looked up there and loaded (first use).
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Arc<LoadedModel>, RegistryError> {
        let mut loaded_here = false;
        let mut found: Option<String> = None;
        // A model unloaded again right after the load this request waited for is loaded once
        // more, a few times at most.
        let mut tries = 0;
        loop {
            // Decided under the lock; every wait happens after it is released.
            let rx = match self.step(name, loaded_here, tries >= 3, &mut found)? {
                Step::Ready(m) => return Ok(m),
                Step::Wait(rx) => rx,
                Step::Find => {
                    // Listed off the lock and off the HTTP thread; then looked up again.
                    found = Some(self.find(name).await.ok_or_else(|| self.not_found(name))?);
                    continue;
                }
            };
            loaded_here = true;
            tries += 1;
            wait(rx).await?;
        }
    }

    fn step(
        self: &Arc<Self>,
        name: &str,
        loaded_here: bool,
        gave_up: bool,
        found: &mut Option<String>,
    ) -> Result<Step, RegistryError> {
        let mut inner = lock(&self.inner);
        match inner.slots.get(name) {
            Some(Slot::Ready(e)) => {
                e.last_used.store(self.tick(), Relaxed);
                e.invocations.fetch_add(1, Relaxed);
                let c = if loaded_here {
                    &self.counters.misses
                } else {
                    &self.counters.hits
                };
                c.fetch_add(1, Relaxed);
                Ok(Step::Ready(e.model()))
            }
            Some(Slot::Loading(rx)) => Ok(Step::Wait(rx.clone())),
            None if gave_up => Err(RegistryError::NotFound(format!(
                "model {name:?} was unloaded as soon as it was loaded; retry"
            ))),
            None => match found.take() {
                Some(_) if inner.closed => Err(RegistryError::Closed),
                Some(url) => Ok(Step::Wait(self.start_load(&mut inner, name, &url)?)),
                None => Ok(Step::Find),
            },
        }
    }

    /// A Target-Model value (`[path/]name.tar.gz`) or a model name, as a loaded model's name.
    pub fn resolve(&self, target: &str) -> String {
        if lock(&self.inner).slots.contains_key(target) {
            target.to_string()
        } else {
            entry_name(target).to_string()
        }
    }

    /// The URI of `name` in the repository, when there is one and it holds the name (listed
    /// now, so models added since the start are found).
    async fn find(self: &Arc<Self>, name: &str) -> Option<String> {
        self.repository.as_ref()?;
        if !valid_name(name) {
            return None;
        }
        let me = Arc::clone(self);
        let listed = tokio::task::spawn_blocking(move || {
            let repo = me.repository.as_ref()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            match rt.block_on(repo.list()) {
                Ok(l) => Some(l),
                Err(e) => {
                    log::warn!("cannot list the model repository: {e}");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()?;
        listed.get(name).cloned()
    }

    fn not_found(&self, name: &str) -> RegistryError {
        RegistryError::NotFound(match &self.repository {
            Some(r) => format!("model {name:?} is not loaded and {} holds no such model", r.uri()),
            None => format!(
                "model {name:?} is not loaded (load it with POST /models, or start mlapp with --model-repository to load models on first use)"
            ),
        })
    }

    /// `GET /models/{name}`.
    pub fn describe(&self, name: &str) -> Option<Described> {
        match lock(&self.inner).slots.get(name) {
            Some(Slot::Ready(e)) => Some(describe(e)),
            _ => None,
        }
    }

    /// Every model loaded, by name.
    pub fn list(&self) -> Vec<Described> {
        let mut out: Vec<Described> = lock(&self.inner)
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(e) => Some(describe(e)),
                Slot::Loading(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.model_name.cmp(&b.model_name));
        out
    }

    /// `DELETE /models/{name}`: answers once the model's requests have ended and it is freed.
    /// A model still loading is waited for, then unloaded.
    pub async fn unload(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        loop {
            let taken = {
                let mut inner = lock(&self.inner);
                match inner.slots.get(name) {
                    None => {
                        return Err(RegistryError::NotFound(format!(
                            "model {name:?} is not loaded"
                        )))
                    }
                    Some(Slot::Loading(rx)) => Err(rx.clone()),
                    Some(Slot::Ready(_)) => match inner.slots.remove(name) {
                        Some(Slot::Ready(e)) => {
                            inner.used -= e.bytes;
                            Ok(e)
                        }
                        _ => continue,
                    },
                }
            };
            match taken {
                Ok(e) => {
                    self.counters.unloads.fetch_add(1, Relaxed);
                    let me = Arc::clone(self);
                    // Joining the model's worker threads blocks.
                    return tokio::task::spawn_blocking(move || me.free(e, "on request"))
                        .await
                        .map_err(|e| RegistryError::Invalid(format!("unload failed: {e}")));
                }
                // Loaded or not, the loop looks again: its outcome does not matter here.
                Err(rx) => {
                    let _ = wait(rx).await;
                }
            }
        }
    }

    /// Frees an unloaded model on a thread of its own (an eviction must not hold up a load).
    fn retire(self: &Arc<Self>, e: Arc<Entry>, why: &'static str) {
        let me = Arc::clone(self);
        let _ = std::thread::Builder::new()
            .name("mlapp-model-free".into())
            .spawn(move || me.free(e, why));
    }

    /// Waits (at most the drain time) for the requests holding the model, then frees it.
    fn free(&self, e: Arc<Entry>, why: &str) {
        let model = e.model();
        drop(e);
        let until = Instant::now() + self.drain;
        // One reference is `model`; each request holds another.
        while Arc::strong_count(&model) > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let holders = Arc::strong_count(&model) - 1;
        let name = model.name.clone();
        if holders > 0 {
            log::warn!(
                "model {name:?}: {holders} requests still hold it after {:?}; freed when they end",
                self.drain
            );
        }
        drop(model);
        log::info!("model {name:?} unloaded {why}");
    }

    /// Loads every model of the repository (at start), one after another.
    pub fn load_repository(self: &Arc<Self>) {
        let Some(repo) = &self.repository else {
            return;
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return log::error!("cannot list {}: {e}", repo.uri()),
        };
        let models = match rt.block_on(repo.list()) {
            Ok(m) => m,
            Err(e) => return log::error!("cannot list the model repository: {e}"),
        };
        log::info!(
            "{}: {} models: {:?}",
            repo.uri(),
            models.len(),
            models.keys()
        );
        for (name, url) in models {
            match rt.block_on(self.load(&name, &url)) {
                Ok(()) | Err(RegistryError::Conflict(_)) => {}
                Err(e) => log::error!("{e}"),
            }
        }
    }

    /// One round of the repository poll: every loaded model whose URI now holds another
    /// version is loaded again beside the old one, switched to, and the old one freed.
    pub fn poll(self: &Arc<Self>, rt: &tokio::runtime::Runtime) {
        let entries: Vec<Arc<Entry>> = lock(&self.inner)
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(e) => Some(Arc::clone(e)),
                Slot::Loading(_) => None,
            })
            .collect();
        for e in entries {
            let now = match rt.block_on(e.fetcher.version()) {
                Ok(v) => v,
                Err(err) => {
                    log::warn!("model {:?}: polling {} failed: {err}", e.name, e.url);
                    continue;
                }
            };
            if now == e.version() {
                continue;
            }
            log::info!(
                "model {:?}: new version {now} at {}, reloading",
                e.name,
                e.url
            );
            if let Err(err) = self.reload(rt, &e) {
                log::error!(
                    "model {:?}: reload failed, still serving version {}: {err}",
                    e.name,
                    e.version()
                );
            }
        }
    }

    fn reload(&self, rt: &tokio::runtime::Runtime, e: &Entry) -> Result<(), String> {
        let fetched = rt.block_on(e.fetcher.fetch()).map_err(|x| x.to_string())?;
        let m = self.build(rt, &fetched.dir, &e.name)?;
        let old = std::mem::replace(
            &mut *e.model.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(m),
        );
        *lock(&e.version) = fetched.version.clone();
        e.fetcher.prune(&fetched.dir);
        log::info!(
            "model {:?}: now serving version {}",
            e.name,
            fetched.version
        );
        let until = Instant::now() + self.drain;
        while Arc::strong_count(&old) > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops new loads; models stay until the process ends.
    pub fn close(&self) {
        lock(&self.inner).closed = true;
    }

    /// Every loaded model, for shutdown (their engines finish queued work).
    pub fn models(&self) -> Vec<Arc<LoadedModel>> {
        lock(&self.inner)
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(e) => Some(e.model()),
                Slot::Loading(_) => None,
            })
            .collect()
    }

    /// The registry's series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use crate::monitor::metrics::{counter, escape, gauge, header};
        use std::fmt::Write as _;
        let (loaded, used) = {
            let inner = lock(&self.inner);
            let ready: Vec<Arc<Entry>> = inner
                .slots
                .values()
                .filter_map(|s| match s {
                    Slot::Ready(e) => Some(Arc::clone(e)),
                    Slot::Loading(_) => None,
                })
                .collect();
            (ready, inner.used)
        };
        gauge(
            out,
            "mlapp_models_loaded",
            "Models loaded and ready.",
            loaded.len() as f64,
        );
        gauge(
            out,
            "mlapp_models_memory_estimate_bytes",
            "Estimated memory of the loaded models, charged to the budget.",
            used as f64,
        );
        gauge(
            out,
            "mlapp_models_memory_budget_bytes",
            "The memory budget of the loaded models (--model-memory-mb).",
            self.budget as f64,
        );
        let c = &self.counters;
        let name = "mlapp_model_loads_total";
        header(out, name, "counter", "Model loads, by outcome.");
        for (outcome, n) in [("ok", &c.loads_ok), ("failed", &c.loads_failed)] {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {}", n.load(Relaxed));
        }
        let name = "mlapp_model_unloads_total";
        header(out, name, "counter", "Models unloaded, by why: asked (DELETE) or evicted (least recently used, to make room).");
        for (why, n) in [("asked", &c.unloads), ("evicted", &c.evictions)] {
            let _ = writeln!(out, "{name}{{reason=\"{why}\"}} {}", n.load(Relaxed));
        }
        counter(
            out,
            "mlapp_model_cache_hits_total",
            "Invocations whose model was already loaded.",
            c.hits.load(Relaxed),
        );
        counter(
            out,
            "mlapp_model_cache_misses_total",
            "Invocations that loaded their model first.",
            c.misses.load(Relaxed),
        );
        header(
            out,
            "mlapp_model_load_duration_seconds",
            "histogram",
            "Time to fetch, load and warm up a model.",
        );
        c.load_seconds
            .render(out, "mlapp_model_load_duration_seconds", "");
        let per_model = [
            (
                "mlapp_model_requests_in_flight",
                "Requests admitted to a model's engine and not yet answered.",
            ),
            (
                "mlapp_model_queue_depth",
                "Requests waiting in a model's batching queue.",
            ),
            (
                "mlapp_model_memory_estimate_bytes",
                "A model's estimated memory.",
            ),
        ];
        for (i, (series, help)) in per_model.iter().enumerate() {
            header(out, series, "gauge", help);
            for e in &loaded {
                let m = e.model();
                let v = match i {
                    0 => m.engine.in_flight() as u64,
                    1 => m.engine.queue_depth() as u64,
                    _ => e.bytes,
                };
                let _ = writeln!(out, "{series}{{model=\"{}\"}} {v}", escape(&e.name));
            }
        }
    }
}

fn describe(e: &Entry) -> Described {
    let m = e.model();
    Described {
        model_name: e.name.clone(),
        model_url: e.url.clone(),
        version: e.version(),
        memory_estimate_bytes: e.bytes,
        invocations: e.invocations.load(Relaxed),
        loaded_at_unix: e
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        kind: m.plan.kind(),
        provider: m.provider,
    }
}

async fn wait(
    mut rx: watch::Receiver<Option<Result<(), RegistryError>>>,
) -> Result<(), RegistryError> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Ok(())),
        // The load thread ended without a word: it panicked.
        Err(_) => Err(RegistryError::Invalid(
            "the model's load ended unexpectedly".into(),
        )),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
