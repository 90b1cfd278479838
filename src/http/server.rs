//! `mlapp serve`: bind first (SageMaker wants connections accepted within 250 ms), load and
//! warm up the model in the background, flip /ping to 200, drain on SIGTERM.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::{web, App, HttpMessage, HttpServer};
use futures_util::FutureExt;

use super::invocations::ServedBy;
use super::reload::{Loader, Trigger};
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
}

pub fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    cfg.validate().map_err(ServeError::Config)?;
    let (env, _) = runtime::init(cfg.ort_dylib.as_deref())?;
    let settings = Settings {
        max_payload_bytes: cfg.max_payload_bytes(),
        timeout: cfg.request_timeout(),
        default_accept: media::parse_output(&cfg.default_accept)
            .ok_or_else(|| ServeError::Config("bad default accept".into()))?,
        default_content_type: cfg.default_content_type.clone(),
        execution_parameters: cfg.execution_parameters(),
        bad_records: cfg.bad_records,
        stream_bodies: cfg.batch,
        unbounded_bodies: cfg.unbounded_bodies(),
    };
    let metrics = Arc::new(Metrics::new());
    let state = web::Data::new(AppState::new(
        settings,
        Readiness::Loading(format!("loading the model from {}", cfg.model.uri())),
        Arc::clone(&metrics),
    ));

    actix_web::rt::System::new().block_on(async {
        let app_state = state.clone();
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap_fn(|req, srv| {
                    let started = std::time::Instant::now();
                    let (method, path) = (req.method().clone(), req.path().to_owned());
                    srv.call(req).map(move |mut res| {
                        if let Ok(r) = &mut res {
                            let status = r.status().as_u16();
                            let took = started.elapsed();
                            let draining = match r.request().app_data::<web::Data<AppState>>() {
                                Some(state) => {
                                    let model = r.request().extensions().get::<ServedBy>().cloned();
                                    let model = model.as_ref().map(|m| &m.0);
                                    state.metrics.request(Route::of(&path), status, model, took);
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
        .disable_signals()
        .bind(&addr)
        .map_err(bind_failed(&addr))?;
        for a in server.addrs() {
            // Tests and scripts read this line to find a port chosen with --port 0.
            println!("mlapp listening on http://{a}");
        }
        let _ = std::io::stdout().flush();
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
            opts: LoadOptions {
                sessions: cfg.sessions(),
                cuda_sessions: cfg.cuda_sessions(),
                intra_threads: cfg.intra_op_threads,
                queue_capacity: cfg.queue_capacity,
                warmup_runs: cfg.warmup_runs,
                warmup_rows: cfg.warmup_rows,
                config_name: cfg.model.model_config.clone(),
                max_batch_rows: cfg.max_batch_rows,
                max_batch_delay: cfg.max_batch_delay(),
                device: cfg.device,
            },
            metrics: Arc::clone(&metrics),
            state: state.clone(),
            poll: cfg.model_poll(),
            drain: cfg.request_timeout() + Duration::from_secs(5),
        };
        // SIGHUP's default action ends the process: take it over before anything can send it.
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reload = loader.spawn()?;
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                if reload.send(Trigger::Signal).is_err() {
                    break;
                }
            }
        });

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
        if let Ok(model) = state.model() {
            model.engine.shutdown();
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

fn access_log(method: &actix_web::http::Method, path: &str, status: u16, took: Duration) {
    let ms = took.as_secs_f64() * 1e3;
    if path == "/ping" {
        log::debug!("{method} {path} {status} {ms:.3}ms");
    } else if status >= 500 && status != 503 {
        log::error!("{method} {path} {status} {ms:.3}ms");
    } else if status >= 400 {
        log::warn!("{method} {path} {status} {ms:.3}ms");
    } else {
        log::debug!("{method} {path} {status} {ms:.3}ms");
    }
}
