//! ONNX Runtime: the library, sessions, and the worker pool requests are scored on.

pub mod pool;
pub mod runtime;

use std::path::Path;
use std::time::Instant;

use ort::environment::Environment;
use ort::session::Session;

pub use pool::{Engine, EngineError};

use crate::codec::Frame;
use crate::model::{self, ModelError, ModelSignature, ModelSource, OutputPlan};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub sessions: usize,
    pub intra_threads: usize,
    pub queue_capacity: usize,
    pub warmup_runs: usize,
    pub warmup_rows: usize,
    pub config_name: String,
}

/// A model ready to serve: warmed up sessions behind the worker pool.
pub struct LoadedModel {
    pub source: ModelSource,
    pub signature: ModelSignature,
    pub plan: OutputPlan,
    pub engine: Engine,
    pub load_seconds: f64,
    pub sessions: usize,
}

/// Finds a model and reads its signature and plan from a first session (what `inspect`
/// prints, and where `load` starts).
pub fn open(
    env: &Environment,
    dir: &Path,
    config_name: &str,
    intra_threads: usize,
) -> Result<(ModelSource, Session, ModelSignature, OutputPlan), ModelError> {
    let source = model::locate(dir, config_name)?;
    let session = pool::build_session(env, &source.file, intra_threads.max(1))?;
    let signature = ModelSignature::from_session(&session, &source.config)?;
    let plan = OutputPlan::choose(&signature, &source.config)?;
    Ok((source, session, signature, plan))
}

/// Loads, checks and warms up a model. Every session runs synthetic rows through the whole
/// output plan before the model counts as ready, so a model that loads but cannot run fails
/// here and not on the first request.
pub fn load(env: &Environment, dir: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let started = Instant::now();
    let (source, first, signature, plan) = open(env, dir, &opts.config_name, opts.intra_threads)?;
    let mut sessions = Vec::with_capacity(opts.sessions.max(1));
    sessions.push(first);
    while sessions.len() < opts.sessions {
        sessions.push(pool::build_session(
            env,
            &source.file,
            opts.intra_threads.max(1),
        )?);
    }
    let rows = signature.fixed_batch.unwrap_or(opts.warmup_rows.max(1));
    for session in &mut sessions {
        for _ in 0..opts.warmup_runs.max(1) {
            let outputs = pool::run(session, Frame::synthetic(&signature, rows))
                .map_err(ModelError::Warmup)?;
            plan.apply(outputs).map_err(ModelError::Warmup)?;
        }
    }
    let n = sessions.len();
    Ok(LoadedModel {
        source,
        signature,
        plan,
        engine: Engine::start(sessions, opts.queue_capacity.max(1)),
        load_seconds: started.elapsed().as_secs_f64(),
        sessions: n,
    })
}
