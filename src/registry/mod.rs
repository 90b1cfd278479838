//! Many named models in one server: SageMaker's multi-model endpoints (`/models`) and a model
//! repository. Name → loaded model, each with its own sessions, batching queue and metrics.
//!
//! The map is held under one lock only to look up, insert or remove a slot, never across a
//! fetch, a load or inference. A load runs on a thread of its own (at most `MAX_LOADING` at
//! once); requests for a model being loaded wait for it. Models are unloaded least recently
//! used when a new one would pass the memory budget; one unloaded that way is loaded again
//! from its URL by its next request, so neither SageMaker nor a client sees it gone. An
//! unloaded model is freed only once the requests holding it end (bounded by the drain time),
//! so no request fails because of an unload.

pub mod args;
mod errors;
mod memory;
mod report;
pub mod repository;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ort::environment::Environment;
use tokio::sync::watch;

pub use args::RegistryArgs;
pub use errors::RegistryError;
pub use memory::estimate;
pub use report::Described;
use repository::{entry_name, valid_name, Repository};

use crate::engine::{self, out_of_resources, LoadOptions, LoadedModel};
use crate::model::fetch::{Fetcher, SourceOptions};
use crate::monitor::metrics::Histogram;
use crate::monitor::Metrics;

/// Loads that may run at once; more are answered 503 (retry).
const MAX_LOADING: usize = 8;
/// How long a first-use load that failed is answered from memory before it is tried again.
const FAILED_TTL: Duration = Duration::from_secs(30);
/// Names remembered (evicted models' URLs, failed first uses); past it, the oldest half goes.
const MAX_REMEMBERED: usize = 10_000;
/// How long a repository listing answers first-use lookups of names it holds...
const LISTING_TTL: Duration = Duration::from_secs(5);
/// ...and of names it does not: a model just put there is found within a second, and
/// requests for names that are nowhere make at most one listing a second.
const MISS_TTL: Duration = Duration::from_secs(1);

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
    /// A new version that failed to load, not tried again until the URL holds another.
    failed_version: Mutex<Option<String>>,
    fetcher: Fetcher,
    /// The memory estimate charged to the budget.
    bytes: AtomicU64,
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

type Outcome = watch::Receiver<Option<Result<(), RegistryError>>>;

/// What `get` does next, decided under the lock.
enum Step {
    Ready(Arc<LoadedModel>),
    Wait(Outcome),
    Find,
}

enum Slot {
    /// Being fetched and loaded; waiters see the outcome on the channel.
    Loading(Outcome),
    Ready(Arc<Entry>),
}

/// Why a load was started: it decides what a failure leaves behind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `POST /models`: the caller hears the failure; nothing is remembered.
    Asked,
    /// A request for a model of the repository or one unloaded to make room: the failure is
    /// remembered for `FAILED_TTL`, so a broken model is not loaded again by every request.
    FirstUse,
    /// The repository at start: loaded only if it fits without unloading others.
    Start,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Estimated bytes of the models loaded and being loaded.
    used: u64,
    /// What each load in progress is charged (moved to its entry when it is ready).
    pending: HashMap<String, u64>,
    /// The URLs of models unloaded to make room, loaded again by their next request.
    evicted: HashMap<String, String>,
    /// First-use loads that failed, and when.
    failed: HashMap<String, (Instant, RegistryError)>,
    closed: bool,
}

impl Inner {
    fn loading(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Loading(_)))
            .count()
    }

    fn uncharge(&mut self, bytes: u64) {
        debug_assert!(self.used >= bytes, "the budget's books do not balance");
        self.used = self.used.saturating_sub(bytes);
    }
}

/// Keeps a map of remembered names bounded: past `MAX_REMEMBERED`, it is emptied (these are
/// hints, and losing them only costs a lookup).
fn remember<V>(map: &mut HashMap<String, V>, name: &str, v: V) {
    if map.len() >= MAX_REMEMBERED {
        map.clear();
    }
    map.insert(name.to_string(), v);
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
    /// Where `POST /models` may load from.
    roots: Vec<String>,
    /// How long an unload waits for the requests holding the model.
    drain: Duration,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(ctx: LoadContext, args: &RegistryArgs, drain: Duration) -> Result<Self, String> {
        let repository = match &args.model_repository {
            Some(uri) => Some(Repository::new(uri, ctx.s3.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Self {
            inner: Mutex::new(Inner::default()),
            budget: args.memory_budget_bytes(),
            clock: AtomicU64::new(0),
            ctx,
            repository,
            roots: args
                .model_roots
                .iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect(),
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
        self.check_root(url)?;
        let rx = {
            let mut inner = lock(&self.inner);
            if inner.slots.contains_key(name) {
                return Err(RegistryError::Conflict(name.to_string()));
            }
            inner.evicted.remove(name);
            inner.failed.remove(name);
            self.start_load(&mut inner, name, url, Origin::Asked)?
        };
        wait(rx).await
    }

    /// A URL `POST /models` may load: inside one of `--model-roots` (a plain absolute path:
    /// no `..`), or under one of its S3 prefixes.
    fn check_root(&self, url: &str) -> Result<(), RegistryError> {
        if inside(&self.roots, url) {
            Ok(())
        } else {
            Err(RegistryError::Invalid(format!(
                "url {url:?} is not inside the places models may be loaded from (--model-roots / MLAPP_MODEL_ROOTS: {})",
                self.roots.join(", ")
            )))
        }
    }

    /// Starts a load in the slot `name` (free: the caller checked under the same lock).
    fn start_load(
        self: &Arc<Self>,
        inner: &mut Inner,
        name: &str,
        url: &str,
        origin: Origin,
    ) -> Result<Outcome, RegistryError> {
        if inner.closed {
            return Err(RegistryError::Closed);
        }
        if inner.loading() >= MAX_LOADING {
            return Err(RegistryError::Busy(format!(
                "{MAX_LOADING} models are being loaded; retry shortly"
            )));
        }
        let (tx, rx) = watch::channel(None);
        inner
            .slots
            .insert(name.to_string(), Slot::Loading(rx.clone()));
        let (me, owned, url) = (Arc::clone(self), name.to_string(), url.to_string());
        let spawned = std::thread::Builder::new()
            .name("mlapp-model-load".into())
            .spawn(move || {
                let started = Instant::now();
                let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    me.load_now(&owned, &url, origin)
                }))
                .unwrap_or_else(|panic| {
                    Err(RegistryError::Internal(format!(
                        "loading model {owned:?} panicked: {}",
                        crate::error::panic_message(&*panic)
                    )))
                });
                let outcome = me.settle(&owned, &url, origin, built, started.elapsed());
                let _ = tx.send(Some(outcome));
            });
        if let Err(e) = spawned {
            inner.slots.remove(name);
            return Err(RegistryError::Busy(format!(
                "cannot start a thread to load model {name:?}: {e}"
            )));
        }
        Ok(rx)
    }

    /// Fetches, charges the budget (unloading least recently used models to make room),
    /// loads and warms up; runs on the load's own thread.
    fn load_now(&self, name: &str, url: &str, origin: Origin) -> Result<Entry, RegistryError> {
        let failed = |why: String| RegistryError::Load {
            name: name.to_string(),
            url: url.to_string(),
            why,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Busy(format!("cannot start a runtime: {e}")))?;
        let fetcher =
            Fetcher::new(url, self.ctx.sources.clone()).map_err(|e| failed(e.to_string()))?;
        let fetched = rt.block_on(fetcher.fetch()).map_err(|e| {
            if e.is_transient() {
                RegistryError::Busy(format!("model {name:?}: fetching {url} failed: {e}"))
            } else {
                failed(e.to_string())
            }
        })?;
        let bytes = estimate(&fetched.dir, self.ctx.opts.sessions.max(1));
        for old in self.charge(name, bytes, origin != Origin::Start)? {
            self.retire(old);
        }
        let model = self.build(&rt, &fetched.dir, name).map_err(|why| {
            if out_of_resources(&why) {
                RegistryError::Resources {
                    name: name.to_string(),
                    why,
                }
            } else {
                failed(why)
            }
        })?;
        Ok(Entry {
            name: name.to_string(),
            url: url.to_string(),
            model: RwLock::new(Arc::new(model)),
            version: Mutex::new(fetched.version),
            failed_version: Mutex::new(None),
            fetcher,
            bytes: AtomicU64::new(bytes),
            last_used: AtomicU64::new(self.tick()),
            invocations: AtomicU64::new(0),
            loaded_at: SystemTime::now(),
        })
    }

    /// Ends a load, whatever happened in it: the slot becomes the model or goes, and what the
    /// load was charged moves to the entry or back to the budget.
    fn settle(
        &self,
        name: &str,
        url: &str,
        origin: Origin,
        built: Result<Entry, RegistryError>,
        took: Duration,
    ) -> Result<(), RegistryError> {
        let mut inner = lock(&self.inner);
        let charged = inner.pending.remove(name).unwrap_or(0);
        match built {
            Ok(entry) => {
                self.counters.loads_ok.fetch_add(1, Relaxed);
                self.counters.load_seconds.observe_duration(took);
                log::info!(
                    "model {name:?} loaded from {url} in {:.3} s (about {:.1} MiB; {:.1} of {:.1} MiB in use)",
                    took.as_secs_f64(),
                    mib(charged),
                    mib(inner.used),
                    mib(self.budget)
                );
                inner
                    .slots
                    .insert(name.to_string(), Slot::Ready(Arc::new(entry)));
                Ok(())
            }
            Err(e) => {
                // A start that leaves a model for its first use (no room) is not a failure.
                let left_for_later =
                    origin == Origin::Start && matches!(e, RegistryError::Memory { .. });
                if !left_for_later {
                    self.counters.loads_failed.fetch_add(1, Relaxed);
                    log::warn!("{e}");
                }
                inner.uncharge(charged);
                inner.slots.remove(name);
                if origin == Origin::FirstUse {
                    remember(&mut inner.failed, name, (Instant::now(), e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Loads and warms up the model in `dir` under `name`, with its live monitor.
    fn build(
        &self,
        rt: &tokio::runtime::Runtime,
        dir: &Path,
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

    /// Charges `bytes` for the load of `name`, unloading the least recently used ready models
    /// until it fits (when `evict`); the models taken out are handed back to be freed.
    fn charge(
        &self,
        name: &str,
        bytes: u64,
        evict: bool,
    ) -> Result<Vec<Arc<Entry>>, RegistryError> {
        let refuse = || RegistryError::Memory {
            name: name.to_string(),
            needs_mib: mib(bytes),
            budget_mib: mib(self.budget),
        };
        if bytes > self.budget {
            return Err(refuse());
        }
        let mut inner = lock(&self.inner);
        let needed = (inner.used.saturating_add(bytes)).saturating_sub(self.budget);
        if needed > 0 && !evict {
            return Err(refuse());
        }
        let mut ready: Vec<(u64, Arc<Entry>)> = inner
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(e) => Some((e.last_used.load(Relaxed), Arc::clone(e))),
                Slot::Loading(_) => None,
            })
            .collect();
        let freeable: u64 = ready.iter().map(|(_, e)| e.bytes.load(Relaxed)).sum();
        if needed > freeable {
            return Err(RegistryError::Busy(format!(
                "model {name:?} needs about {:.1} MiB; the rest of the budget is held by models being loaded; retry shortly",
                mib(bytes)
            )));
        }
        ready.sort_by_key(|(used, _)| *used);
        let mut evicted = Vec::new();
        for (_, e) in ready {
            if inner.used.saturating_add(bytes) <= self.budget {
                break;
            }
            inner.slots.remove(&e.name);
            inner.uncharge(e.bytes.load(Relaxed));
            remember(&mut inner.evicted, &e.name, e.url.clone());
            self.counters.evictions.fetch_add(1, Relaxed);
            log::info!(
                "model {:?} unloaded to make room for {name:?} (least recently used)",
                e.name
            );
            evicted.push(e);
        }
        inner.used = inner.used.saturating_add(bytes);
        inner.pending.insert(name.to_string(), bytes);
        Ok(evicted)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Relaxed) + 1
    }

    /// The model `name` for one request; a model being loaded is waited for. A model unloaded
    /// to make room is loaded again from its URL, and with a repository, a name not loaded yet
    /// is looked up there and loaded (first use).
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
                    found = Some(self.find(name).await?.ok_or_else(|| self.not_found(name))?);
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
                return Ok(Step::Ready(e.model()));
            }
            Some(Slot::Loading(rx)) => return Ok(Step::Wait(rx.clone())),
            None if gave_up => {
                return Err(RegistryError::Busy(format!(
                    "model {name:?} was unloaded as soon as it was loaded; retry"
                )))
            }
            None => {}
        }
        if let Some((at, e)) = inner.failed.get(name) {
            if at.elapsed() < FAILED_TTL {
                return Err(e.clone());
            }
            inner.failed.remove(name);
        }
        let url = inner.evicted.get(name).cloned().or_else(|| found.take());
        match url {
            Some(url) => Ok(Step::Wait(self.start_load(
                &mut inner,
                name,
                &url,
                Origin::FirstUse,
            )?)),
            None => Ok(Step::Find),
        }
    }

    /// A Target-Model value (`name.tar.gz`) or a model name, as a loaded model's name. A
    /// value with a path is taken whole: the repository holds names, not paths.
    pub fn resolve(&self, target: &str) -> String {
        if lock(&self.inner).slots.contains_key(target) || target.contains('/') {
            target.to_string()
        } else {
            entry_name(target).to_string()
        }
    }

    /// The URI of `name` in the repository (listed at most every `LISTING_TTL`, off the HTTP
    /// thread), None when it holds no such model; an error when it cannot be listed.
    async fn find(self: &Arc<Self>, name: &str) -> Result<Option<String>, RegistryError> {
        if self.repository.is_none() || !valid_name(name) {
            return Ok(None);
        }
        let me = Arc::clone(self);
        let wanted = name.to_string();
        let listed = tokio::task::spawn_blocking(move || match &me.repository {
            Some(repo) => match repo.cached(LISTING_TTL) {
                Ok(l) if !l.contains_key(&wanted) => repo.cached(MISS_TTL),
                other => other,
            },
            None => Ok(Arc::default()),
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("repository listing failed: {e}")))?
        .map_err(|e| RegistryError::Busy(format!("cannot list the model repository: {e}")))?;
        Ok(listed.get(name).cloned())
    }

    fn not_found(&self, name: &str) -> RegistryError {
        RegistryError::NotFound(match &self.repository {
            Some(r) => format!("model {name:?} is not loaded and {} holds no such model", r.uri()),
            None => format!(
                "model {name:?} is not loaded (load it with POST /models, or start mlapp with --model-repository to load models on first use)"
            ),
        })
    }

    /// The ready models and the bytes charged, for the reports.
    fn entries(&self) -> (Vec<Arc<Entry>>, u64) {
        let inner = lock(&self.inner);
        let ready = inner
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(e) => Some(Arc::clone(e)),
                Slot::Loading(_) => None,
            })
            .collect();
        (ready, inner.used)
    }

    /// `GET /models/{name}`.
    pub fn describe(&self, name: &str) -> Option<Described> {
        match lock(&self.inner).slots.get(name) {
            Some(Slot::Ready(e)) => Some(report::describe(e)),
            _ => None,
        }
    }

    /// Every model loaded, by name.
    pub fn list(&self) -> Vec<Described> {
        let mut out: Vec<Described> = self
            .entries()
            .0
            .iter()
            .map(|e| report::describe(e))
            .collect();
        out.sort_by(|a, b| a.model_name.cmp(&b.model_name));
        out
    }

    pub fn loaded_count(&self) -> usize {
        lock(&self.inner)
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Ready(_)))
            .count()
    }

    /// `DELETE /models/{name}`: answers once the model's requests have ended and it is freed.
    /// A model still loading is waited for, then unloaded.
    pub async fn unload(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        loop {
            let taken = {
                let mut inner = lock(&self.inner);
                // Asked to go: it is not loaded again by a later request.
                inner.evicted.remove(name);
                inner.failed.remove(name);
                match inner.slots.get(name) {
                    None => {
                        return Err(RegistryError::NotFound(format!(
                            "model {name:?} is not loaded"
                        )))
                    }
                    Some(Slot::Loading(rx)) => Err(rx.clone()),
                    Some(Slot::Ready(e)) => {
                        let e = Arc::clone(e);
                        inner.slots.remove(name);
                        inner.uncharge(e.bytes.load(Relaxed));
                        Ok(e)
                    }
                }
            };
            match taken {
                Ok(e) => {
                    self.counters.unloads.fetch_add(1, Relaxed);
                    let drain = self.drain;
                    // Waiting for the requests and joining the model's threads block.
                    return tokio::task::spawn_blocking(move || free(e, drain, "on request"))
                        .await
                        .map_err(|e| RegistryError::Internal(format!("unload failed: {e}")));
                }
                // Loaded or not, the loop looks again (a load always settles its slot).
                Err(rx) => {
                    let _ = wait(rx).await;
                }
            }
        }
    }

    /// Frees a model unloaded to make room, on a thread of its own (a load must not wait).
    fn retire(&self, e: Arc<Entry>) {
        let drain = self.drain;
        let _ = std::thread::Builder::new()
            .name("mlapp-model-free".into())
            .spawn(move || free(e, drain, "to make room"));
    }

    /// Loads the repository's models at start, one after another, as many as fit the budget
    /// without unloading another; the rest load on first use.
    pub fn load_repository(self: &Arc<Self>) {
        let Some(repo) = &self.repository else {
            return;
        };
        let models = match repo.cached(Duration::ZERO) {
            Ok(m) => m,
            Err(e) => return log::error!("cannot list the model repository: {e}"),
        };
        log::info!(
            "{}: {} models: {:?}",
            repo.uri(),
            models.len(),
            models.keys()
        );
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return log::error!("cannot start the repository's loads");
        };
        for (name, url) in models.iter() {
            let rx = {
                let mut inner = lock(&self.inner);
                if inner.slots.contains_key(name) {
                    continue;
                }
                self.start_load(&mut inner, name, url, Origin::Start)
            };
            match rx.map(|rx| rt.block_on(wait(rx))) {
                Ok(Ok(())) => {}
                Ok(Err(RegistryError::Memory { .. })) => {
                    log::info!("model {name:?} is not loaded at start: the memory budget is full; it loads on first use")
                }
                Ok(Err(e)) | Err(e) => log::error!("{e}"),
            }
        }
    }

    /// One round of the repository poll: every loaded model whose URI now holds another
    /// version is loaded again beside the old one, switched to, and the old one freed. A
    /// version that failed is not tried again until the URI holds another.
    pub fn poll(&self, rt: &tokio::runtime::Runtime) {
        // Weak: a model unloaded during the round is freed at once, not after it.
        let entries: Vec<std::sync::Weak<Entry>> =
            self.entries().0.iter().map(Arc::downgrade).collect();
        for e in entries {
            let Some(e) = e.upgrade() else {
                continue;
            };
            let now = match rt.block_on(e.fetcher.version()) {
                Ok(v) => v,
                Err(err) => {
                    log::warn!("model {:?}: polling {} failed: {err}", e.name, e.url);
                    continue;
                }
            };
            if now == e.version() || lock(&e.failed_version).as_deref() == Some(now.as_str()) {
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
                *lock(&e.failed_version) = Some(now);
            }
        }
    }

    fn reload(&self, rt: &tokio::runtime::Runtime, e: &Arc<Entry>) -> Result<(), String> {
        let fetched = rt.block_on(e.fetcher.fetch()).map_err(|x| x.to_string())?;
        let m = self.build(rt, &fetched.dir, &e.name)?;
        let bytes = estimate(&fetched.dir, self.ctx.opts.sessions.max(1));
        {
            let mut inner = lock(&self.inner);
            // Unloaded (or unloaded and loaded again) meanwhile: this version is not wanted.
            match inner.slots.get(&e.name) {
                Some(Slot::Ready(now)) if Arc::ptr_eq(now, e) => {}
                _ => return Ok(()),
            }
            // The new version's estimate replaces the old one's (no one is unloaded for it).
            inner.uncharge(e.bytes.swap(bytes, Relaxed));
            inner.used = inner.used.saturating_add(bytes);
        }
        let old = std::mem::replace(
            &mut *e.model.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(m),
        );
        *lock(&e.version) = fetched.version.clone();
        *lock(&e.failed_version) = None;
        e.fetcher.prune(&fetched.dir);
        log::info!(
            "model {:?}: now serving version {}",
            e.name,
            fetched.version
        );
        engine::drain(&old, self.drain);
        Ok(())
    }

    /// Stops new loads; models stay until the process ends.
    pub fn close(&self) {
        lock(&self.inner).closed = true;
    }

    /// Every loaded model, for shutdown (their engines finish queued work).
    pub fn models(&self) -> Vec<Arc<LoadedModel>> {
        self.entries().0.iter().map(|e| e.model()).collect()
    }
}

/// Whether `url` is inside one of `roots`: below a folder (a plain absolute path, no `..`),
/// or starting with an s3:// prefix.
fn inside(roots: &[String], url: &str) -> bool {
    if url.starts_with("s3://") {
        return roots
            .iter()
            .any(|r| r.starts_with("s3://") && url.starts_with(r.as_str()));
    }
    let path = Path::new(url);
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && roots
            .iter()
            .filter(|r| !r.starts_with("s3://"))
            .any(|r| path.starts_with(r) && path != Path::new(r))
}

/// Waits (at most `drain`) for the requests holding the model, then frees it here.
fn free(e: Arc<Entry>, drain: Duration, why: &str) {
    let model = e.model();
    drop(e);
    let holders = engine::drain(&model, drain);
    let name = model.name.clone();
    if holders > 0 {
        log::warn!(
            "model {name:?}: {holders} requests still hold it after {drain:?}; freed when they end"
        );
    }
    drop(model);
    log::info!("model {name:?} unloaded {why}");
}

async fn wait(mut rx: Outcome) -> Result<(), RegistryError> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Ok(())),
        // The load thread ended without a word (it settles its slot even when it panics).
        Err(_) => Err(RegistryError::Internal(
            "a model's load ended unexpectedly".into(),
        )),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_load_only_from_inside_the_roots() {
        let roots = vec![
            "/opt/ml/models".to_string(),
            "s3://bucket/models/".to_string(),
        ];
        for ok in [
            "/opt/ml/models/abc/model",
            "/opt/ml/models/x",
            "s3://bucket/models/a.tar.gz",
        ] {
            assert!(inside(&roots, ok), "{ok}");
        }
        for refused in [
            "/opt/ml/models",
            "/opt/ml/models/../../etc",
            "/opt/ml/modelsX/a",
            "/etc/passwd",
            "/",
            "",
            "opt/ml/models/a",
            "./a",
            "s3://bucket/other/a",
            "s3://bucket/models",
            "s3://other/models/a",
        ] {
            assert!(!inside(&roots, refused), "{refused}");
        }
    }

    #[test]
    fn remembered_names_stay_bounded() {
        let mut m = HashMap::new();
        for i in 0..(MAX_REMEMBERED * 2 + 5) {
            remember(&mut m, &i.to_string(), i);
            assert!(m.len() <= MAX_REMEMBERED);
        }
        assert!(m.contains_key(&(MAX_REMEMBERED * 2 + 4).to_string()));
    }
}
