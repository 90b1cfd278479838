//! `mlapp serve`: bind first (SageMaker wants connections accepted within 250 ms), load and
//! warm up the model in the background, flip /ping to 200, drain on SIGTERM.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use actix_web::dev::Service;
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use futures_util::future::{ready, Either};
use futures_util::FutureExt;

use super::auth::{AuthError, Tokens};
use super::invocations::ServedBy;
use super::reload::{Loader, Trigger};
use super::tls::TlsError;
use super::{AppState, Readiness, Settings};
use crate::codec::media;
use crate::config::ServeConfig;
use crate::engine::{runtime, LoadOptions};
use crate::model::fetch::Fetcher;
use crate::monitor::{Metrics, Route};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

pub fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    cfg.validate().map_err(ServeError::Config)?;
    // Files that are wrong fail the start at once, before any port is bound.
    let tokens = match &cfg.auth_token_file {
        Some(path) => {
            let t = Tokens::load(path)?;
            log::info!(
                "bearer tokens required on every route but /ping ({} tokens from {})",
                t.len(),
                path.display()
            );
            Some(Arc::new(t))
        }
        None => None,
    };
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(super::tls::server_config(cert, key)?),
        _ => None,
    };
    let (env, _) = runtime::init(cfg.ort_dylib.as_deref())?;
    let settings = Settings {
        max_payload_bytes: cfg.max_payload_bytes(),
        timeout: cfg.request_timeout(),
        default_accept: media::parse_output(
            cfg.default_accept.as_deref().unwrap_or("application/json"),
        )
        .ok_or_else(|| ServeError::Config("bad default accept".into()))?,
        answer_like_input: cfg.batch && cfg.default_accept.is_none(),
        default_content_type: cfg.default_content_type.clone(),
        execution_parameters: cfg.execution_parameters(),
        bad_records: cfg.bad_records,
        stream_bodies: cfg.batch,
        unbounded_bodies: cfg.unbounded_bodies(),
        body_memory_bytes: cfg.body_memory_bytes(),
        body_idle_timeout: cfg.body_idle_timeout(),
        chunk_bytes: cfg.chunk_bytes(),
    };
    if settings.answer_like_input {
        // SageMaker assembles a Batch Transform's output line by line (AssembleWith=Line): one
        // JSON document per mini-batch would break that.
        log::info!(
            "batch mode: a CSV or JSON Lines body with no Accept (or */*) is answered in its own \
             format, one line per record; SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT sets one type instead"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let opts = LoadOptions {
        sessions: cfg.sessions(),
        cuda_sessions: cfg.cuda_sessions(),
        intra_threads: cfg.intra_op_threads,
        queue_capacity: cfg.queue_capacity,
        warmup_runs: cfg.warmup_runs,
        warmup_rows: cfg.warmup_rows,
        config_name: cfg.model.model_config.clone(),
        max_batch_rows: cfg.max_batch_rows,
        max_batch_delay: cfg.max_batch_delay(),
        inline_budget: cfg.inline_budget(),
        device: cfg.device,
        background: false,
    };
    let registry = super::many::registry(&cfg, env, &opts, &metrics).map_err(ServeError::Config)?;
    let s3 = cfg.model.source_options().s3;
    let capture = cfg
        .monitor
        .capture(&super::reload::stable_name(&cfg.model.uri()), &s3)
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let state = web::Data::new(
        AppState::new(
            settings,
            match &registry {
                Some(_) => {
                    Readiness::Failed("multi-model mode: models are named per request".into())
                }
                None => Readiness::Loading(format!("loading the model from {}", cfg.model.uri())),
            },
            Arc::clone(&metrics),
        )
        .with_capture(capture)
        .with_registry(registry.clone()),
    );

    // Settings and the SQLite lock fail the start; the store is connected after the port is
    // bound, so a database that is not up yet never keeps /ping and /invocations waiting.
    let portal = match cfg.portal.enabled() {
        true => Some(
            crate::portal::Portal::prepare(&cfg.portal)
                .map_err(|e| ServeError::Config(e.to_string()))?,
        ),
        false => None,
    };

    actix_web::rt::System::new().block_on(async {
        let app_state = state.clone();
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let app_tokens = tokens.clone();
        let server = HttpServer::new(move || {
            let tokens = app_tokens.clone();
            App::new()
                .app_data(app_state.clone())
                .wrap_fn(move |req, srv| {
                    let started = std::time::Instant::now();
                    let (method, path) = (req.method().clone(), req.path().to_owned());
                    let metrics = req
                        .app_data::<web::Data<AppState>>()
                        .map(|s| Arc::clone(&s.metrics));
                    // Without a token file this is one branch on a None.
                    let refused = match &tokens {
                        Some(t) if !probe(&path) => t
                            .allows(req.headers().get(actix_web::http::header::AUTHORIZATION))
                            .err(),
                        _ => None,
                    };
                    let answer = match refused {
                        Some(why) => {
                            if let Some(m) = &metrics {
                                m.rejected("unauthorized");
                            }
                            Either::Left(ready(Ok(req.into_response(why.response(path == "/v2" || path.starts_with("/v2/"))))))
                        }
                        // tokio would drop the connection with no answer: a bug still gets
                        // the one error shape (actix answers an Err with its response), and
                        // is counted.
                        None => Either::Right(AssertUnwindSafe(srv.call(req)).catch_unwind().map(
                            move |answer| {
                                answer.unwrap_or_else(|panic| {
                                    if let Some(m) = &metrics {
                                        m.panicked();
                                    }
                                    Err(Panicked::from(&*panic).into())
                                })
                            },
                        )),
                    };
                    answer.map(move |mut res| {
                        if let Ok(r) = &mut res {
                            let status = r.status().as_u16();
                            let took = started.elapsed();
                            let draining = match r.request().app_data::<web::Data<AppState>>() {
                                Some(state) => {
                                    let model = r
                                        .request()
                                        .extensions()
                                        .get::<ServedBy>()
                                        .map(|m| Arc::clone(&m.0.name));
                                    state.metrics.request(
                                        Route::of(&path),
                                        status,
                                        model.as_ref(),
                                        took,
                                    );
                                    state.draining()
                                }
                                None => false,
                            };
                            // While draining, keep-alive connections (a load balancer's pool)
                            // close after their answer, so the drain ends when the requests
                            // in flight do, and the balancer reconnects to other replicas.
                            if draining {
                                r.response_mut()
                                    .head_mut()
                                    .set_connection_type(actix_web::http::ConnectionType::Close);
                            }
                            access_log(&method, &path, status, took);
                        }
                        res
                    })
                })
                .configure(super::routes)
        })
        .workers(cfg.http_workers())
        .backlog(2048)
        .shutdown_timeout(cfg.shutdown_timeout)
        // Signals are handled below, so that the drain is logged.
        .disable_signals();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            Some(tls) => server.bind_rustls_0_23(&addr, tls),
            None => server.bind(&addr),
        }
        .map_err(bind_failed(&addr))?;
        for a in server.addrs() {
            // Tests and scripts read this line to find a port chosen with --port 0.
            println!("mlapp listening on {scheme}://{a}");
        }
        let _ = std::io::stdout().flush();
        if let Some(prepared) = portal {
            let scoring = crate::portal::Scoring {
                env,
                sources: cfg.model.source_options(),
                sessions: cfg.workers.unwrap_or_else(ServeConfig::cpus).max(1),
                device: cfg.device,
                chunk_bytes: cfg.chunk_bytes(),
                capture: state.capture.clone(),
            };
            state.portal_waiting("connecting to the job store");
            let state = state.clone();
            std::thread::Builder::new()
                .name("mlapp-portal-start".into())
                .spawn(move || match prepared.open(scoring) {
                    Ok(p) => {
                        if state.draining() {
                            p.stop_claiming();
                        }
                        let _ = state.portal.set(p);
                    }
                    Err(e) => {
                        log::error!("{e}");
                        state.portal_waiting(&e.to_string());
                    }
                })?;
        }
        let running = server.run();
        let stopping = running.handle();
        let (drain_state, drain_secs) = (state.clone(), cfg.shutdown_timeout);
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int, mut quit) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::quit())?,
        );
        actix_web::rt::spawn(async move {
            let (name, graceful) = tokio::select! {
                _ = term.recv() => ("SIGTERM", true),
                _ = int.recv() => ("SIGINT", true),
                _ = quit.recv() => ("SIGQUIT", false),
            };
            drain_state.start_draining();
            // No new items: one being scored is finished by another replica once its lease
            // runs out.
            if let Some(p) = drain_state.portal.get() {
                p.shut_down(Duration::from_secs(10)).await;
            }
            if graceful {
                log::info!(
                    "{name}: accepting no more connections; finishing the {} requests in flight (up to {drain_secs} s)",
                    drain_state.live().in_flight
                );
            } else {
                log::warn!("{name}: stopping now, requests in flight are dropped");
            }
            stopping.stop(graceful).await;
        });
        let metrics_server = match cfg.metrics_port {
            Some(port) => Some(metrics_only(state.clone(), &cfg.host, port)?),
            None => None,
        };

        let loader = Loader {
            env,
            fetcher: Fetcher::new(&cfg.model.uri(), cfg.model.source_options())
                .map_err(|e| ServeError::Config(e.to_string()))?,
            opts: opts.clone(),
            metrics: Arc::clone(&metrics),
            state: state.clone(),
            poll: cfg.model_poll(),
            drain: cfg.request_timeout() + Duration::from_secs(5),
            monitor: cfg.monitor.clone(),
            s3,
        };
        // SIGHUP's default action ends the process: take it over before anything can send it.
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        // A stream of its own, so that token rotation does not wait on, or fail with, a model
        // reload.
        let token_hangups = match tokens {
            Some(t) => Some((t, signal(SignalKind::hangup())?)),
            None => None,
        };
        match &registry {
            Some(registry) => {
                let poll = super::many::run_registry(Arc::clone(registry), cfg.model_poll())?;
                actix_web::rt::spawn(async move {
                    while hangups.recv().await.is_some() {
                        if poll.send(()).is_err() {
                            break;
                        }
                    }
                });
            }
            None => {
                let reload = loader.spawn()?;
                actix_web::rt::spawn(async move {
                    while hangups.recv().await.is_some() {
                        if reload.send(Trigger::Signal).is_err() {
                            break;
                        }
                    }
                });
                super::many::start_shadow(&cfg, env, &opts, state.clone())
                    .map_err(ServeError::Config)?;
            }
        }
        if let Some((tokens, mut hangups)) = token_hangups {
            actix_web::rt::spawn(async move {
                while hangups.recv().await.is_some() {
                    match tokens.reload() {
                        Ok(n) => log::info!("SIGHUP: {n} bearer tokens in force"),
                        Err(e) => log::error!(
                            "SIGHUP: keeping the {} bearer tokens in force: {e}",
                            tokens.len()
                        ),
                    }
                }
            });
        }

        running.await?;
        let left = state.live().in_flight;
        if left == 0 {
            log::info!("drained: every accepted request was answered");
        } else {
            log::warn!("stopped with {left} requests unanswered (--shutdown-timeout reached)");
        }
        if let Some(m) = metrics_server {
            m.stop(true).await;
        }
        log::info!("HTTP server stopped; finishing queued inference");
        if let Some(r) = &state.registry {
            r.close();
            for m in r.models() {
                m.engine.shutdown();
            }
        }
        if let Ok(model) = state.model() {
            model.engine.shutdown();
        }
        // What was captured is written out (and uploaded) before the process ends.
        if let Some(c) = &state.capture {
            if !c.flush(Duration::from_secs(5)) {
                log::warn!("capture: records still unwritten at exit: {:?}", c.stats());
            }
        }
        if let Some(s) = state.shadow.get() {
            if !s.flush(Duration::from_secs(5)) {
                log::warn!("capture: the shadow's records still unwritten at exit");
            }
        }
        Ok(())
    })
}

/// A second listener with only `/metrics` (and `/ping`), for scrapers that cannot reach the
/// main port's routes through SageMaker.
fn metrics_only(
    state: web::Data<AppState>,
    host: &str,
    port: u16,
) -> Result<actix_web::dev::ServerHandle, ServeError> {
    let addr = format!("{host}:{port}");
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(super::metrics_routes)
    })
    .workers(1)
    .disable_signals()
    .bind(&addr)
    .map_err(bind_failed(&addr))?;
    for a in server.addrs() {
        println!("mlapp metrics on http://{a}/metrics");
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

fn bind_failed(addr: &str) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    }
}

/// A handler that panicked, answered as a 500 in the one error shape.
#[derive(Debug)]
struct Panicked(crate::error::ApiError);

impl From<&(dyn std::any::Any + Send)> for Panicked {
    fn from(panic: &(dyn std::any::Any + Send)) -> Self {
        let what = crate::error::panic_message(panic);
        Self(crate::error::ApiError::Internal(format!(
            "the request handler failed unexpectedly ({what}); this is a bug in mlapp"
        )))
    }
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl actix_web::ResponseError for Panicked {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        super::error_response(&self.0)
    }
}

/// Health probes: open without a token (a load balancer's or Kubernetes' probe carries
/// none, and they say nothing but up or down), and not counted as refusals when down.
fn probe(path: &str) -> bool {
    matches!(path, "/ping" | "/v2/health/live" | "/v2/health/ready")
}

fn access_log(method: &actix_web::http::Method, path: &str, status: u16, took: Duration) {
    let ms = took.as_secs_f64() * 1e3;
    log::debug!("{method} {path} {status} {ms:.3}ms");
    // A refusal is the client's (4xx) or overload's (503), and errors are logged where they
    // arise (`error_response`): per request they would flood the log exactly when the server
    // is busiest, so only a count is logged, at most every 10 s. /metrics has every one.
    if status >= 400 && !probe(path) {
        REFUSALS.record(method, path, status);
    }
}

/// Requests refused since the last summary, and when that was (seconds since start).
struct Refusals {
    count: AtomicU64,
    last: AtomicU64,
}

static REFUSALS: Refusals = Refusals {
    count: AtomicU64::new(0),
    last: AtomicU64::new(u64::MAX),
};

/// Seconds between two summaries of refused requests.
const REFUSALS_EVERY: u64 = 10;

impl Refusals {
    fn record(&self, method: &actix_web::http::Method, path: &str, status: u16) {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs();
        self.count.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == u64::MAX || now >= last.saturating_add(REFUSALS_EVERY);
        // One thread wins the summary; the others only count.
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = self.count.swap(0, Ordering::Relaxed);
            log::warn!(
                "{n} request(s) refused with 4xx/5xx since the last summary, the latest {method} {path} {status} (all by status in mlapp_http_requests_total, each one in the debug log)"
            );
        }
    }
}
