//! ONNX Runtime: the library, sessions, and the worker pool requests are scored on.

pub mod batcher;
mod combine;
pub mod graphs;
mod local;
pub mod parity;
pub mod pool;
pub mod runtime;
pub mod session;
pub mod unit;
pub mod warmup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;

pub use batcher::Policy;
pub use pool::{lowest_priority, Admitted, Engine, EngineError, Scored};
pub use session::Device;

use crate::model::{self, ModelError, ModelSignature, ModelSource, OutputPlan};
use crate::monitor::Metrics;
use crate::pipeline::Before;

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

/// A model found and read from a first session per graph (what `inspect` prints, and where
/// `load` starts).
pub struct Opened {
    pub source: ModelSource,
    /// What requests carry: the graphs' features less those its steps derive.
    pub signature: ModelSignature,
    /// What the graph (or the chain or ensemble of them) takes and gives.
    pub graph_signature: ModelSignature,
    pub plan: OutputPlan,
    pub provider: &'static str,
    pub layout: Arc<graphs::Layout>,
    /// The config's `before` steps, compiled; None when there are none.
    pub before: Option<Arc<Before>>,
}

impl Opened {
    /// A worker's unit around `sessions` (one per graph file).
    pub fn unit(&self, sessions: Vec<Session>) -> unit::Unit {
        unit::Unit::new(sessions, Arc::clone(&self.layout), self.before.clone())
    }

    /// A session of each graph file, on device `id`.
    fn sessions(
        &self,
        env: &Environment,
        intra_threads: usize,
        device: Device,
        id: i32,
    ) -> Result<Vec<Session>, ModelError> {
        graph_files(&self.source)
            .iter()
            .map(|f| session::build_session(env, f, intra_threads.max(1), device, id).map(|s| s.0))
            .collect()
    }
}

/// Every graph file of a model, as listed (one for a model of one graph).
fn graph_files(source: &ModelSource) -> Vec<PathBuf> {
    if source.graphs.is_empty() {
        vec![source.file.clone()]
    } else {
        source.graphs.clone()
    }
}

/// Finds a model, reads its signature from a first session of each graph and checks its
/// wiring, steps and output plan against it; those sessions come back beside it.
pub fn open(
    env: &Environment,
    dir: &Path,
    config_name: &str,
    intra_threads: usize,
    device: Device,
) -> Result<(Opened, Vec<Session>), ModelError> {
    let source = model::locate(dir, config_name)?;
    let files = graph_files(&source);
    let mut sessions = Vec::with_capacity(files.len());
    let mut members = Vec::with_capacity(files.len());
    let mut provider = session::CPU;
    for (i, f) in files.iter().enumerate() {
        // The first graph settles the device, so that no chain or ensemble runs half on
        // CUDA and half on the CPU.
        let this = match (i, provider) {
            (0, _) => device,
            (_, session::CUDA) => Device::Cuda,
            _ => Device::Cpu,
        };
        let (s, p) = session::build_session(env, f, intra_threads.max(1), this, 0)?;
        if i == 0 {
            provider = p;
        }
        members.push(graphs::Member {
            name: f
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            inputs: model::ports(s.inputs()),
            outputs: model::ports(s.outputs()),
        });
        sessions.push(s);
    }
    let (layout, graph_signature) =
        graphs::Layout::compile(source.config.graphs.as_ref(), &members, &source.config)?;
    let plan = OutputPlan::choose(&graph_signature, &source.config)?;
    let (before, signature) = Before::compile(
        &source.config.steps.before,
        &graph_signature,
        &source.config,
        &source.dir,
    )?;
    let opened = Opened {
        source,
        signature,
        graph_signature,
        plan,
        provider,
        layout: Arc::new(layout),
        before: (!before.is_empty()).then(|| Arc::new(before)),
    };
    Ok((opened, sessions))
}

/// One warm-up run on an opened model and its first sessions, and the parity check of its
/// sample rows (the rows it checked, if it ships any), as `load` does them, for
/// `mlapp inspect`.
pub fn check_warmup(
    opened: &Opened,
    sessions: Vec<Session>,
    rows: usize,
) -> Result<(warmup::Report, Option<usize>), ModelError> {
    let warm = warmup::rows(&opened.source, &opened.signature, rows)?;
    let mut unit = opened.unit(sessions);
    let report = warmup::run(std::slice::from_mut(&mut unit), &warm, 1, &opened.plan)?;
    let parity = parity::check(&mut unit, &opened.source, &opened.signature, &opened.plan)?;
    Ok((report, parity))
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
    let (opened, first) = open(env, dir, &opts.config_name, opts.intra_threads, opts.device)?;
    let provider = opened.provider;
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
    let mut units = Vec::with_capacity(count);
    units.push(opened.unit(first));
    // The first session is on device 0; the others go round the visible GPUs.
    for id in session::device_ids(count, gpus).into_iter().skip(1) {
        units.push(opened.unit(opened.sessions(env, opts.intra_threads, device, id)?));
    }
    if device == Device::Cuda {
        log::info!(
            "{}: {count} CUDA sessions over {} GPU(s)",
            opened.source.file.display(),
            gpus.min(count)
        );
    }
    let rows = warmup::rows(&opened.source, &opened.signature, opts.warmup_rows)?;
    let report = warmup::run(&mut units, &rows, opts.warmup_runs, &opened.plan)?;
    if report.refused.is_some() {
        log::warn!("{}: warm-up: {report}", opened.source.file.display());
    }
    if let Some(unit) = units.first_mut() {
        if let Some(n) = parity::check(unit, &opened.source, &opened.signature, &opened.plan)? {
            log::info!(
                "{}: parity: its {n} sample rows give their expected answers",
                opened.source.dir.display()
            );
        }
    }
    // Coalescing requests is only safe when every output has one row per input row, which
    // an output that reshapes or reduces over rows breaks.
    let batching = report.follows_rows;
    let n = units.len();
    let policy = Policy {
        max_rows: opts.max_batch_rows.max(1),
        max_delay: opts.max_batch_delay,
        capacity: opts.queue_capacity.max(1),
        combine: batching,
        inline_budget: opts.inline_budget,
    };
    let Opened {
        source,
        signature,
        plan,
        ..
    } = opened;
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
        engine: Engine::start(units, policy, metrics, opts.background),
        load_seconds: started.elapsed().as_secs_f64(),
        sessions: n,
        batching,
        provider,
        warmup: report,
        monitor: None,
    })
}
