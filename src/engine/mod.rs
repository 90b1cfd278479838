//! ONNX Runtime: the library, sessions, and the worker pool requests are scored on.

pub mod batcher;
mod combine;
mod local;
pub mod pool;
pub mod runtime;
pub mod session;
pub mod warmup;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;

pub use batcher::Policy;
pub use pool::{lowest_priority, Admitted, Engine, EngineError, Scored};
pub use session::Device;

use crate::model::{self, ModelError, ModelSignature, ModelSource, OutputPlan};
use crate::monitor::Metrics;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Sessions on the CPU.
    pub sessions: usize,
    /// Sessions when the model runs on CUDA, spread over the visible GPUs: each one holds its
    /// own arena and handles, so the CPU count would be far too many (`session::cuda_sessions`).
    pub cuda_sessions: usize,
    pub intra_threads: usize,
    pub queue_capacity: usize,
    pub warmup_runs: usize,
    /// Rows of the synthetic warm-up, when the model folder ships no warm-up rows.
    pub warmup_rows: usize,
    pub config_name: String,
    /// Rows one coalesced run may hold.
    pub max_batch_rows: usize,
    /// How long an unfilled batch may wait for more requests.
    pub max_batch_delay: Duration,
    /// Most inference an HTTP thread may run per event-loop turn (zero: none).
    pub inline_budget: Duration,
    pub device: Device,
    /// The inference threads run at the lowest CPU priority and never on HTTP threads (a
    /// shadow model: the served model's work comes first when the CPUs are busy).
    pub background: bool,
}

/// A model ready to serve: warmed up sessions behind the worker pool.
pub struct LoadedModel {
    /// The model's name in metrics and on the V2 routes: `name` in its config, else its
    /// folder's (in multi-model mode, the name it was loaded as).
    pub name: Arc<str>,
    pub source: ModelSource,
    pub signature: ModelSignature,
    pub plan: OutputPlan,
    pub engine: Engine,
    pub load_seconds: f64,
    pub sessions: usize,
    /// Whether requests are coalesced into shared runs (see `load`).
    pub batching: bool,
    /// The ONNX Runtime execution provider the sessions were built for.
    pub provider: &'static str,
    pub warmup: warmup::Report,
    /// Live data-quality monitoring of what it scores, when on (`monitor::setup`).
    pub monitor: Option<Arc<crate::monitor::live::Monitor>>,
}

impl LoadedModel {
    /// Whether a request may hold several rows. Only a fixed-batch model whose outputs could
    /// not be shown to follow its rows cannot (its runs could not be split and joined).
    pub fn multi_record(&self) -> bool {
        self.signature.fixed_batch.is_none() || self.warmup.follows_rows
    }

    /// The rows every request must have, for a model that takes exactly k and cannot be
    /// split (`multi_record`); None: any number.
    pub fn rows_fixed(&self) -> Option<usize> {
        self.signature.fixed_batch.filter(|_| !self.multi_record())
    }

    /// Scores an admitted request's frame. A model that takes exactly k rows (and whose
    /// outputs could not be split by row) refuses any other count here, as the client's
    /// error, before a run that could only fail.
    pub async fn score(
        &self,
        ticket: &Admitted,
        frame: crate::codec::Frame,
        deadline: std::time::Instant,
    ) -> Result<Scored, EngineError> {
        self.check_rows(&frame)?;
        self.engine.score(ticket, frame, deadline).await
    }

    /// As `score`, always on the worker threads (`Engine::score_on_workers`).
    pub async fn score_on_workers(
        &self,
        ticket: &Admitted,
        frame: crate::codec::Frame,
        deadline: std::time::Instant,
    ) -> Result<Scored, EngineError> {
        self.check_rows(&frame)?;
        self.engine.score_on_workers(ticket, frame, deadline).await
    }

    fn check_rows(&self, frame: &crate::codec::Frame) -> Result<(), EngineError> {
        match self.rows_fixed() {
            Some(k) if frame.rows != k => Err(EngineError::Rows(format!(
                "the model takes exactly {k} rows per request (its outputs do not have one \
                 row per input row, so runs cannot be split or joined); this one has {}",
                frame.rows
            ))),
            _ => Ok(()),
        }
    }
}

/// Waits, at most `limit`, for the requests holding `model` to let it go; returns how many
/// still hold it (it is then freed when the last of them ends).
pub fn drain(model: &Arc<LoadedModel>, limit: Duration) -> usize {
    let until = Instant::now() + limit;
    while Arc::strong_count(model) > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    Arc::strong_count(model) - 1
}

/// ONNX Runtime's words for a failure of memory, disk or the GPU, not of the model.
pub fn out_of_resources(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "memory",
        "alloc",
        "cuda",
        "cudnn",
        "cublas",
        "no space left",
    ]
    .iter()
    .any(|w| message.contains(w))
}

/// Finds a model and reads its signature and plan from a first session (what `inspect`
/// prints, and where `load` starts).
pub fn open(
    env: &Environment,
    dir: &Path,
    config_name: &str,
    intra_threads: usize,
    device: Device,
) -> Result<
    (
        ModelSource,
        Session,
        ModelSignature,
        OutputPlan,
        &'static str,
    ),
    ModelError,
> {
    let source = model::locate(dir, config_name)?;
    let (session, provider) =
        session::build_session(env, &source.file, intra_threads.max(1), device, 0)?;
    let signature = ModelSignature::from_session(&session, &source.config)?;
    let plan = OutputPlan::choose(&signature, &source.config)?;
    Ok((source, session, signature, plan, provider))
}

/// One warm-up run on an opened session, as `load` does it, for `mlapp inspect`.
pub fn check_warmup(
    session: Session,
    source: &ModelSource,
    signature: &ModelSignature,
    plan: &OutputPlan,
    rows: usize,
) -> Result<warmup::Report, ModelError> {
    let rows = warmup::rows(source, signature, rows)?;
    warmup::run(&mut [session], &rows, 1, plan)
}

/// Loads, checks and warms up a model. Every session runs the warm-up rows (shipped with the
/// model, else synthetic) through the whole output plan before the model counts as ready, so a
/// model that loads but cannot run fails here and not on the first request (see `warmup`).
pub fn load(
    env: &Environment,
    dir: &Path,
    opts: &LoadOptions,
    metrics: Arc<Metrics>,
) -> Result<LoadedModel, ModelError> {
    let started = Instant::now();
    let (source, first, signature, plan, provider) =
        open(env, dir, &opts.config_name, opts.intra_threads, opts.device)?;
    // Every session on the provider the first one got: no model half on CUDA, half on CPU.
    let device = if provider == session::CUDA {
        Device::Cuda
    } else {
        Device::Cpu
    };
    let (count, gpus) = match device {
        Device::Cuda => (opts.cuda_sessions.max(1), session::visible_gpus()),
        _ => (opts.sessions.max(1), 1),
    };
    let mut sessions = Vec::with_capacity(count);
    sessions.push(first);
    // The first session is on device 0; the others go round the visible GPUs.
    for id in session::device_ids(count, gpus).into_iter().skip(1) {
        let (session, _) =
            session::build_session(env, &source.file, opts.intra_threads.max(1), device, id)?;
        sessions.push(session);
    }
    if device == Device::Cuda {
        log::info!(
            "{}: {count} CUDA sessions over {} GPU(s)",
            source.file.display(),
            gpus.min(count)
        );
    }
    let rows = warmup::rows(&source, &signature, opts.warmup_rows)?;
    let report = warmup::run(&mut sessions, &rows, opts.warmup_runs, &plan)?;
    if report.refused.is_some() {
        log::warn!("{}: warm-up: {report}", source.file.display());
    }
    // Coalescing requests is only safe when every output has one row per input row, which
    // an output that reshapes or reduces over rows breaks.
    let batching = report.follows_rows;
    let n = sessions.len();
    let policy = Policy {
        max_rows: opts.max_batch_rows.max(1),
        max_delay: opts.max_batch_delay,
        capacity: opts.queue_capacity.max(1),
        combine: batching,
        inline_budget: opts.inline_budget,
    };
    let name = source.config.name.clone().unwrap_or_else(|| {
        source
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    Ok(LoadedModel {
        name: Arc::from(name),
        source,
        signature,
        plan,
        engine: Engine::start(sessions, policy, metrics, opts.background),
        load_seconds: started.elapsed().as_secs_f64(),
        sessions: n,
        batching,
        provider,
        warmup: report,
        monitor: None,
    })
}
