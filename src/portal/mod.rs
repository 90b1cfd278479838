//! The prediction-job portal: `create`, `invoke`, `check`, `stop`, `list` and `evaluate` on
//! jobs that live in a store every replica shares, so a load balancer may send each call to
//! any replica, and any idle replica runs the next work item.
//!
//! A job is a definition (`spec`) pinned to a model version at create, split into work items
//! (one per input file). Replicas claim items with a lease they renew while scoring, and
//! complete an item only while they still hold it (`store`); an item whose replica died is
//! claimed again when its lease runs out. Each item is scored by the streaming scorer through
//! `mlapp transform`'s file path, so an item's output is byte for byte what `mlapp transform`
//! writes. Items tally their predictions; the replica that finishes the last item merges the
//! tallies into the job's results and compares them with an earlier job (`results`).
//!
//! Everything here runs on the portal's own runtime (one thread for the store and the
//! leases, and a blocking thread per item being scored), never on an HTTP worker's.

pub mod client;
pub mod evaluate;
mod lease;
pub mod report;
pub mod results;
mod roots;
pub mod spec;
pub mod store;
pub(crate) mod view;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::model::fetch::{Fetcher, SourceOptions};
use crate::storage::S3Store;
use crate::transform::places;
use crate::transform::Place;
use ort::environment::Environment;
use spec::{invalid, Invalid, JobSpec};
use store::{JobRow, NewItem, Store, StoreError};

/// The portal's settings (part of `serve`).
#[derive(Args, Clone, Debug)]
pub struct PortalArgs {
    /// Folder of the portal's embedded job store (SQLite). Setting it (or --db-url) turns the
    /// portal on; the container image sets /var/lib/mlapp.
    #[arg(long, env = "MLAPP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The job store shared by replicas: postgres://user:password@host:port/db. Default:
    /// SQLite in --state-dir, for one replica.
    #[arg(long, env = "MLAPP_DB_URL", hide_env_values = true)]
    pub db_url: Option<String>,
    /// This replica's name in leases and job history. Default: host name and process id.
    /// Naming replicas means there are several: refused on SQLite, which one host owns.
    #[arg(long, env = "MLAPP_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Work items this replica scores at once (0: it serves the portal's routes but scores
    /// no items). Two: one file's last pieces and the next file's first overlap, so sessions
    /// do not idle between files (bench/README.md).
    #[arg(long, env = "MLAPP_PORTAL_WORKERS", default_value_t = 2)]
    pub portal_workers: usize,
    /// How long a replica's claim on an item lasts without renewal (renewed every third of
    /// it): a replica that dies holds its item this long at most.
    #[arg(long, env = "MLAPP_PORTAL_LEASE_SECONDS", default_value_t = 60.0)]
    pub portal_lease_seconds: f64,
    /// How often an idle replica looks for work, in seconds.
    #[arg(long, env = "MLAPP_PORTAL_POLL_SECONDS", default_value_t = 1.0)]
    pub portal_poll_seconds: f64,
    /// Folders and s3:// prefixes jobs may read and write (models, inputs, outputs, ground
    /// truth), comma-separated. Default: anywhere the server may.
    #[arg(long, env = "MLAPP_PORTAL_ROOTS", value_delimiter = ',')]
    pub portal_roots: Vec<String>,
}

impl PortalArgs {
    /// On when a store is named (an empty value names none: `MLAPP_STATE_DIR=` turns the
    /// image's default off).
    pub fn enabled(&self) -> bool {
        self.state_dir
            .as_ref()
            .is_some_and(|d| !d.as_os_str().is_empty())
            || self.db_url.as_ref().is_some_and(|u| !u.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no job is named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the portal is off: start mlapp with --state-dir (embedded SQLite) or MLAPP_DB_URL (PostgreSQL)")]
    Off,
    #[error("the portal is not available: {0}")]
    Start(String),
    #[error("{0}")]
    Internal(String),
}

impl PortalError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::Store(_) | Self::Off | Self::Start(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_job",
            Self::NotFound(_) => "job_not_found",
            Self::Conflict(_) => "job_conflict",
            Self::Store(_) => "store_unavailable",
            Self::Off => "portal_off",
            Self::Start(_) => "portal_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The field at fault, for a bad request.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid(i) => Some(&i.field),
            _ => None,
        }
    }
}

/// Job states, SageMaker's names plus `Created`, `Queued` and `PartiallyCompleted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Created,
    Queued,
    InProgress,
    Completed,
    PartiallyCompleted,
    Failed,
    Stopping,
    Stopped,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        Self::Created,
        Self::Queued,
        Self::InProgress,
        Self::Completed,
        Self::PartiallyCompleted,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Queued => "Queued",
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::PartiallyCompleted => "PartiallyCompleted",
            Self::Failed => "Failed",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::PartiallyCompleted | Self::Failed | Self::Stopped
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    Queued,
    Running,
    Done,
    Failed,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ItemStatus> {
        [Self::Queued, Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// What a replica needs to run items: where models come from and how to load them.
pub struct Scoring {
    pub env: &'static Environment,
    pub sources: SourceOptions,
    pub sessions: usize,
    pub device: crate::engine::Device,
    pub chunk_bytes: usize,
    /// The server's prediction capture (`--capture-uri`): jobs' pieces are captured too.
    pub capture: Option<Arc<crate::monitor::capture::Capture>>,
}

pub struct Portal {
    store: Store,
    replica: String,
    sources: SourceOptions,
    runtime: tokio::runtime::Handle,
    shutdown: tokio::sync::watch::Sender<bool>,
    workers: Arc<worker::Workers>,
    roots: roots::Roots,
    /// Kept so the SQLite file stays this process's alone.
    _lock: Option<std::fs::File>,
}

impl Portal {
    /// Opens the store, starts the portal's runtime and this replica's item workers.
    /// Checks the settings and takes the SQLite store's lock: what must fail the start.
    pub fn prepare(args: &PortalArgs) -> Result<Prepared, PortalError> {
        let start = |m: String| PortalError::Start(m);
        let db_url = args.db_url.as_ref().filter(|u| !u.is_empty());
        let state_dir = args
            .state_dir
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty());
        let (url, lock) = match (db_url, state_dir) {
            (Some(url), _) => (url.clone(), None),
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| start(format!("{}: {e}", dir.display())))?;
                let lock_path = dir.join("mlapp.db.lock");
                let lock = std::fs::File::create(&lock_path)
                    .map_err(|e| start(format!("{}: {e}", lock_path.display())))?;
                // SQLite cannot be shared by replicas on other hosts, and two processes on one
                // state folder would both run its items: one process owns it.
                lock.try_lock().map_err(|_| {
                    start(format!(
                        "another mlapp uses the job store in {}: give each process its own \
                         --state-dir, or share jobs through MLAPP_DB_URL=postgres://...",
                        dir.display()
                    ))
                })?;
                (
                    format!("sqlite://{}?mode=rwc", dir.join("mlapp.db").display()),
                    Some(lock),
                )
            }
            (None, None) => return Err(PortalError::Off),
        };
        if url.starts_with("sqlite:") && args.replica_id.is_some() {
            return Err(start(
                "MLAPP_REPLICA_ID names one of several replicas, but the job store is SQLite, \
                 which replicas cannot share: set MLAPP_DB_URL=postgres://..."
                    .into(),
            ));
        }
        crate::config::in_range(
            "--portal-lease-seconds",
            args.portal_lease_seconds,
            1.0,
            86_400.0,
        )
        .map_err(start)?;
        crate::config::in_range(
            "--portal-poll-seconds",
            args.portal_poll_seconds,
            0.01,
            3600.0,
        )
        .map_err(start)?;
        let replica = args.replica_id.clone().unwrap_or_else(default_replica);
        let roots = roots::Roots::parse(&args.portal_roots).map_err(start)?;
        if roots.is_open() {
            log::warn!(
                "portal: jobs may read and write anywhere this server may: set --portal-roots \
                 (and --auth-token-file) on a shared server"
            );
        }
        Ok(Prepared {
            url,
            lock,
            replica,
            roots,
            workers: args.portal_workers,
            lease: Duration::from_secs_f64(args.portal_lease_seconds),
            poll: Duration::from_secs_f64(args.portal_poll_seconds),
        })
    }
}

/// A portal whose settings are checked, not yet connected to its store.
pub struct Prepared {
    url: String,
    lock: Option<std::fs::File>,
    replica: String,
    roots: roots::Roots,
    workers: usize,
    lease: Duration,
    poll: Duration,
}

impl Prepared {
    /// Connects to the store (waiting for a PostgreSQL that is not up yet), starts the
    /// portal's runtime and this replica's item workers.
    pub fn open(self, scoring: Scoring) -> Result<Arc<Portal>, PortalError> {
        let start = |m: String| PortalError::Start(m);
        let Prepared {
            url,
            lock,
            replica,
            roots,
            workers: n_workers,
            lease,
            poll,
        } = self;
        // Two threads for the store, the leases and the routes; scoring and file-system work
        // run on blocking threads, so a slow listing never holds up a lease renewal.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mlapp-portal")
            .enable_all()
            .build()
            .map_err(|e| start(format!("cannot start its runtime: {e}")))?;
        // A database started beside the replicas (compose, a VM booting) may not listen yet:
        // the server answers meanwhile, and the portal's routes say why they wait.
        let store = runtime.block_on(async {
            let mut wait = Duration::from_secs(1);
            loop {
                match Store::open(&url).await {
                    Err(StoreError::Db(e)) if !url.starts_with("sqlite:") => {
                        log::warn!(
                            "portal: the job store is not reachable yet ({e}); again in {wait:?}"
                        );
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                    other => break other,
                }
            }
        })?;
        log::info!(
            "portal: job store {} ({:?}), replica {replica}, {} item workers",
            store::redact(&url),
            store.backend(),
            n_workers
        );
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let sources = scoring.sources.clone();
        let workers = worker::Workers::new(store.clone(), replica.clone(), lease, poll, scoring);
        let portal = Arc::new(Portal {
            store,
            replica,
            sources,
            runtime: runtime.handle().clone(),
            shutdown,
            workers: Arc::clone(&workers),
            roots,
            _lock: lock,
        });
        for n in 0..n_workers {
            let (w, stop) = (Arc::clone(&workers), portal.shutdown.subscribe());
            runtime.spawn(async move { w.run(n, stop).await });
        }
        let sweeper = Arc::clone(&workers);
        let stop = portal.shutdown.subscribe();
        runtime.spawn(async move { sweeper.sweep(stop).await });
        // The runtime lives as long as the process: its threads are the portal's.
        std::thread::Builder::new()
            .name("mlapp-portal-rt".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| start(format!("cannot start its thread: {e}")))?;
        Ok(portal)
    }
}

impl Portal {
    /// Stops claiming items (a server that began draining while the portal started).
    pub fn stop_claiming(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stops claiming items, and gives back those being scored (another replica takes them
    /// at once instead of after their lease); waits up to `limit` for that.
    pub async fn shut_down(&self, limit: Duration) {
        let _ = self.shutdown.send(true);
        let until = std::time::Instant::now() + limit;
        while self.workers.busy() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `f` on the portal's runtime.
    async fn on_runtime<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, PortalError>> + Send + 'static,
    ) -> Result<T, PortalError> {
        self.runtime
            .spawn(f)
            .await
            .map_err(|e| PortalError::Internal(format!("a portal task failed: {e}")))?
    }

    /// `create`: 201 and the job, 200 and the stored job for the same definition again.
    pub async fn create(self: &Arc<Self>, body: Vec<u8>) -> Result<(u16, Value), PortalError> {
        let (me, handle) = (Arc::clone(self), self.runtime.clone());
        // Listing a folder and hashing a model folder block: off the portal's threads.
        tokio::task::spawn_blocking(move || handle.block_on(me.create_here(&body)))
            .await
            .map_err(|e| PortalError::Internal(format!("a portal task failed: {e}")))?
    }

    async fn create_here(&self, body: &[u8]) -> Result<(u16, Value), PortalError> {
        let spec = JobSpec::parse(body)?;
        spec.check()?;
        for (field, place) in [
            ("model", &spec.model),
            ("input", &spec.input),
            ("output", &spec.output),
        ] {
            self.roots.check(field, place)?;
        }
        let canonical = spec.canonical();
        if let Some(job) = self.store.job(&spec.name).await? {
            return self.replay(job, &canonical).await;
        }
        if let Some(base) = spec.compare_to.as_deref() {
            if base != spec::COMPARE_PREVIOUS && self.store.job(base).await?.is_none() {
                return Err(invalid("compare_to", format!("no job is named {base:?}")).into());
            }
        }
        let input = Place::parse(&spec.input).map_err(|e| invalid("input", e.to_string()))?;
        let output = Place::parse(&spec.output).map_err(|e| invalid("output", e.to_string()))?;
        let s3 = if input.is_s3() || output.is_s3() || spec.model.starts_with("s3://") {
            Some(S3Store::connect(&self.sources.s3).await)
        } else {
            None
        };
        let planned = places::plan(s3.as_ref(), &input, &output)
            .await
            .map_err(|e| invalid("input", e.to_string()))?;
        if planned.is_empty() {
            return Err(invalid("input", format!("no files under {input}")).into());
        }
        let fetcher = Fetcher::new(&spec.model, self.sources.clone())
            .map_err(|e| invalid("model", e.to_string()))?;
        let version = fetcher
            .version()
            .await
            .map_err(|e| invalid("model", format!("{}: {e}", spec.model)))?;
        let items: Vec<NewItem> = planned
            .iter()
            .map(|i| NewItem {
                input: i.input.to_string(),
                output: i.output.to_string(),
                size: i.size,
            })
            .collect();
        let labels = serde_json::to_string(&spec.labels).unwrap_or_else(|_| "{}".into());
        let inserted = self
            .store
            .insert_job(
                &spec.name,
                &canonical,
                &spec.model,
                &version,
                spec.labels.get("series").map(String::as_str),
                &labels,
                &items,
                &self.replica,
            )
            .await?;
        let job = self
            .store
            .job(&spec.name)
            .await?
            .ok_or_else(|| PortalError::NotFound(spec.name.clone()))?;
        if !inserted {
            // Another replica created it between our look and our insert.
            return self.replay(job, &canonical).await;
        }
        log::info!(
            "portal: job {} created: {} items, model {} ({version})",
            spec.name,
            items.len(),
            spec.model
        );
        Ok((201, self.describe(job).await?))
    }

    async fn replay(&self, job: JobRow, canonical: &str) -> Result<(u16, Value), PortalError> {
        if job.spec == canonical {
            Ok((200, self.describe(job).await?))
        } else {
            Err(PortalError::Conflict(format!(
                "a job named {:?} exists with another definition: choose a new name, or send the same definition to get it",
                job.name
            )))
        }
    }

    /// `invoke`: 202 when the job was queued (first run or resume), 200 when it already runs
    /// or is queued; 409 when it finished.
    pub async fn invoke(self: &Arc<Self>, name: String) -> Result<(u16, Value), PortalError> {
        let me = Arc::clone(self);
        self.on_runtime(async move {
            let job = me.job(&name).await?;
            let queued = match job.status {
                JobStatus::Created => me.store.queue(&name, &me.replica).await?,
                JobStatus::Failed | JobStatus::Stopped => {
                    me.store
                        .resume(&name, &[JobStatus::Failed, JobStatus::Stopped], &me.replica)
                        .await?
                }
                JobStatus::Queued | JobStatus::InProgress => false,
                JobStatus::Stopping => {
                    return Err(PortalError::Conflict(format!(
                        "job {name:?} is stopping: invoke it again once it is Stopped to resume it"
                    )))
                }
                JobStatus::Completed | JobStatus::PartiallyCompleted => {
                    return Err(PortalError::Conflict(format!(
                        "job {name:?} is {}: create a job with a new name to run it again",
                        job.status.as_str()
                    )))
                }
            };
            if queued {
                // A job resumed with nothing left to claim is finished here, not left queued.
                worker::settle(&me.store, &me.replica, &name).await?;
            }
            let job = me.job(&name).await?;
            Ok((if queued { 202 } else { 200 }, me.describe(job).await?))
        })
        .await
    }

    /// `check`: the job's state, progress, failures, results and comparison.
    pub async fn check(self: &Arc<Self>, name: String) -> Result<Value, PortalError> {
        let me = Arc::clone(self);
        self.on_runtime(async move {
            let job = me.job(&name).await?;
            me.describe(job).await
        })
        .await
    }

    /// `stop`: 202 when it was asked to stop, 200 when it had ended already.
    pub async fn stop(self: &Arc<Self>, name: String) -> Result<(u16, Value), PortalError> {
        let me = Arc::clone(self);
        self.on_runtime(async move {
            let job = me.job(&name).await?;
            let asked = if job.status.terminal() || job.status == JobStatus::Stopping {
                false
            } else {
                me.store
                    .transition(
                        &name,
                        &[JobStatus::Created, JobStatus::Queued, JobStatus::InProgress],
                        JobStatus::Stopping,
                        &me.replica,
                        "stop requested",
                    )
                    .await?
            };
            if asked {
                // With no item being scored, nothing is left to wait for.
                worker::settle(&me.store, &me.replica, &name).await?;
            }
            let job = me.job(&name).await?;
            Ok((if asked { 202 } else { 200 }, me.describe(job).await?))
        })
        .await
    }

    /// `list`: job summaries, newest first, by status and labels.
    pub async fn list(
        self: &Arc<Self>,
        status: Option<String>,
        labels: Vec<(String, String)>,
        limit: usize,
    ) -> Result<Value, PortalError> {
        let status = match status {
            Some(s) => Some(JobStatus::parse(&s).ok_or_else(|| {
                invalid(
                    "status",
                    format!(
                        "{s:?} is not a job status: one of {}",
                        JobStatus::ALL.map(|s| s.as_str()).join(", ")
                    ),
                )
            })?),
            None => None,
        };
        let me = Arc::clone(self);
        self.on_runtime(async move {
            let series = labels
                .iter()
                .find(|(k, _)| k == "series")
                .map(|(_, v)| v.clone());
            // Filtering by labels other than the series happens here, after a bounded read.
            let rows = me
                .store
                .list(
                    status,
                    series.as_deref(),
                    if labels.is_empty() {
                        limit as i64
                    } else {
                        10_000
                    },
                )
                .await?;
            let jobs: Vec<Value> = rows
                .iter()
                .filter(|j| {
                    let have: serde_json::Map<String, Value> =
                        serde_json::from_str(&j.labels).unwrap_or_default();
                    labels
                        .iter()
                        .all(|(k, v)| have.get(k).and_then(Value::as_str) == Some(v.as_str()))
                })
                .take(limit)
                .map(view::summary)
                .collect();
            Ok(json!({ "jobs": jobs }))
        })
        .await
    }

    /// `evaluate`: scores a finished job's predictions against late ground truth.
    pub async fn evaluate(self: &Arc<Self>, body: Vec<u8>) -> Result<(u16, Value), PortalError> {
        let me = Arc::clone(self);
        self.on_runtime(
            async move { evaluate::start(&me.store, &me.sources, &me.roots, &body).await },
        )
        .await
    }

    /// The stored evaluation of a job, for the report page.
    pub async fn evaluation(
        self: &Arc<Self>,
        name: String,
    ) -> Result<(JobRow, Value), PortalError> {
        let me = Arc::clone(self);
        self.on_runtime(async move {
            let job = me.job(&name).await?;
            let eval = job
                .evaluation
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .ok_or_else(|| {
                    PortalError::Conflict(format!(
                        "job {name:?} has no evaluation: POST ground truth to /api/providers/prediction/evaluate first"
                    ))
                })?;
            Ok((job, eval))
        })
        .await
    }

    /// Jobs and items by status, as the sweep last counted them (`/metrics` never waits on
    /// the store).
    pub fn counts(&self) -> Option<worker::Counts> {
        self.workers.counts()
    }

    async fn job(&self, name: &str) -> Result<JobRow, PortalError> {
        spec::check_name(name)?;
        self.store
            .job(name)
            .await?
            .ok_or_else(|| PortalError::NotFound(name.to_string()))
    }

    async fn describe(&self, job: JobRow) -> Result<Value, PortalError> {
        let name = &job.name;
        let counts = self.store.counts_of(name).await?;
        let items = self.store.items(name, None, view::ITEMS_SHOWN).await?;
        let failed = self
            .store
            .items(name, Some(ItemStatus::Failed), view::FAILURES_SHOWN)
            .await?;
        let holders = self.store.holders(name).await?;
        let events = self.store.events(name).await?;
        Ok(view::describe(
            &job, &counts, &items, &failed, &holders, &events,
        ))
    }
}

/// Jobs and items by status in Prometheus' text format; every status is listed, at 0 when
/// none, so that a series does not vanish.
pub fn metrics_text(jobs: &[(String, i64)], items: &[(String, i64)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let count = |all: &[(String, i64)], s: &str| {
        all.iter()
            .find(|(k, _)| k == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    out.push_str("# HELP mlapp_jobs Prediction jobs in the portal's store, by status.\n# TYPE mlapp_jobs gauge\n");
    for s in JobStatus::ALL {
        let _ = writeln!(
            out,
            "mlapp_jobs{{status=\"{}\"}} {}",
            s.as_str(),
            count(jobs, s.as_str())
        );
    }
    out.push_str("# HELP mlapp_job_items Work items of prediction jobs, by status.\n# TYPE mlapp_job_items gauge\n");
    for s in [
        ItemStatus::Queued,
        ItemStatus::Running,
        ItemStatus::Done,
        ItemStatus::Failed,
    ] {
        let _ = writeln!(
            out,
            "mlapp_job_items{{status=\"{}\"}} {}",
            s.as_str(),
            count(items, s.as_str())
        );
    }
    out
}

fn default_replica() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}
