//! How `serve` starts what goes beside the one model: the registry of many models (loaded
//! from the repository, polled for new versions) and the shadow challenger.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use ort::environment::Environment;

use super::AppState;
use crate::config::ServeConfig;
use crate::engine::{self, LoadOptions};
use crate::model::fetch::Fetcher;
use crate::monitor::{shadow::Shadow, Metrics};
use crate::registry::{LoadContext, Registry};

/// The registry of multi-model mode, or None when the server serves one model.
pub fn registry(
    cfg: &ServeConfig,
    env: &'static Environment,
    opts: &LoadOptions,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<Registry>>, String> {
    if !cfg.registry.multi() {
        return Ok(None);
    }
    let mut opts = opts.clone();
    opts.sessions = cfg.registry.sessions_per_model;
    opts.cuda_sessions = cfg.registry.sessions_per_model;
    let sources = cfg.model.source_options();
    let ctx = LoadContext {
        env,
        opts,
        s3: sources.s3.clone(),
        sources,
        metrics: Arc::clone(metrics),
        monitor: cfg.monitor.clone(),
    };
    let drain = cfg.request_timeout() + Duration::from_secs(5);
    let registry = Registry::new(ctx, &cfg.registry, drain)?;
    log::info!(
        "multi-model mode: models load with POST /models{}; their memory budget is {} MiB",
        registry
            .repository()
            .map(|r| format!(" or by name from {r}"))
            .unwrap_or_default(),
        registry.budget() >> 20
    );
    Ok(Some(Arc::new(registry)))
}

/// Loads the repository's models, then polls them for new versions (every `poll`, and on
/// each SIGHUP), on a thread of its own.
pub fn run_registry(
    registry: Arc<Registry>,
    poll: Option<Duration>,
) -> std::io::Result<std::sync::mpsc::Sender<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("mlapp-registry".into())
        .spawn(move || {
            registry.load_repository();
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return log::error!("cannot start the repository poll");
            };
            loop {
                let next = match poll {
                    Some(every) => rx
                        .recv_timeout(every)
                        .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected)),
                    None => rx.recv().map_err(|_| true),
                };
                if next == Err(true) {
                    return;
                }
                registry.poll(&rt);
            }
        })?;
    Ok(tx)
}

/// Loads the shadow model in the background; the shadow starts once it is ready. A shadow
/// that fails to load is logged and the server serves on without it.
pub fn start_shadow(
    cfg: &ServeConfig,
    env: &'static Environment,
    opts: &LoadOptions,
    state: web::Data<AppState>,
) -> Result<(), String> {
    let Some(uri) = cfg.registry.shadow_model_uri.clone() else {
        return Ok(());
    };
    let s3 = cfg.model.source_options().s3;
    // The shadow's records go under its own variant, as SageMaker's shadow variants' do,
    // for every request whose served answer was captured.
    let capture = match &cfg.monitor.capture_uri {
        Some(_) => {
            let mut m = cfg.monitor.clone();
            m.capture_variant = cfg.registry.shadow_variant.clone();
            m.capture_percent = 100.0;
            m.capture(&super::reload::stable_name(&cfg.model.uri()), &s3)
                .map_err(|e| e.to_string())?
        }
        None => None,
    };
    let fetcher = Fetcher::new(&uri, cfg.model.source_options()).map_err(|e| e.to_string())?;
    // One session on one thread at the lowest priority: a challenger must not take the
    // served model's CPUs (when they are busy, its runs time out and are counted instead).
    let mut opts = opts.clone();
    (opts.sessions, opts.cuda_sessions, opts.intra_threads) = (1, 1, 1);
    opts.background = true;
    let percent = cfg.registry.shadow_percent;
    let timeout = Duration::from_secs_f64(cfg.registry.shadow_timeout_ms / 1e3);
    std::thread::Builder::new()
        .name("mlapp-shadow-load".into())
        .spawn(move || {
            let loaded = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(fetcher.fetch()).map_err(|e| e.to_string()))
                .and_then(|f| {
                    // Its runs are not the served model's: counted apart from them.
                    engine::load(env, &f.dir, &opts, Arc::new(Metrics::new()))
                        .map_err(|e| e.to_string())
                });
            match loaded {
                Ok(mut m) => {
                    m.name = Arc::from(super::reload::stable_name(&uri));
                    log::info!(
                        "shadow model {} ready: it scores {percent} % of requests after they are answered",
                        m.source.file.display()
                    );
                    match Shadow::start(Arc::new(m), percent, timeout, capture) {
                        Ok(shadow) => {
                            let _ = state.shadow.set(shadow);
                        }
                        Err(e) => log::error!("the shadow cannot start its thread: {e}"),
                    }
                }
                Err(e) => log::error!("the shadow model {uri} failed to load; serving without it: {e}"),
            }
        })
        .map(drop)
        .map_err(|e| e.to_string())
}
