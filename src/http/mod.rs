//! HTTP: thin handlers over the core. They read headers, call codec/engine, map the result.

pub mod auth;
mod execution_parameters;
mod info;
pub(crate) mod invocations;
mod many;
mod metrics;
mod models;
mod monitoring;
mod openapi;
mod ping;
mod portal;
pub mod reload;
pub mod server;
mod state;
pub mod tls;
mod v2;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

pub use state::{AppState, Readiness, Settings};

use crate::error::ApiError;

/// Every route, for the server and for tests that build an `App` in-process.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ping").route(web::get().to(ping::ping)))
        .service(web::resource("/invocations").route(web::post().to(invocations::invocations)))
        .service(web::resource("/metrics").route(web::get().to(metrics::metrics)))
        .service(
            web::resource("/execution-parameters")
                .route(web::get().to(execution_parameters::execution_parameters)),
        )
        .service(web::resource("/info").route(web::get().to(info::info)))
        .service(web::resource("/monitoring").route(web::get().to(monitoring::monitoring)))
        .service(web::resource("/openapi.json").route(web::get().to(openapi::openapi)))
        // Resources are tried in this order: the V2 routes, the only dynamic paths on a
        // one-model server's hot path, before the portal's and the /models API's.
        .configure(v2::routes)
        .configure(portal::routes)
        .configure(models::routes)
        .default_service(web::to(not_found));
}

/// The routes of the optional metrics-only listener.
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics::metrics)))
        .service(web::resource("/ping").route(web::get().to(ping::ping)))
        .service(web::resource("/info").route(web::get().to(info::info)))
        .default_service(web::to(not_found));
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let body = serde_json::json!({"error": {
        "code": "not_found",
        "message": format!("no route for {} {}; mlapp serves GET /ping, POST /invocations, GET /execution-parameters, GET /info, GET /metrics, GET /monitoring, the multi-model API under /models, the Open Inference Protocol (KServe V2) under /v2, the OpenAPI document at /openapi.json and the job portal under /api/providers/prediction/ (create, invoke, check, stop, list, evaluate, report)", req.method(), req.path()),
    }});
    HttpResponse::NotFound().json(body)
}

/// The one place an `ApiError` becomes a response, and where it is logged: 5xx as errors
/// (they are mlapp's fault), 4xx at debug (they are the client's).
pub(crate) fn error_response(e: &ApiError) -> HttpResponse {
    error_with(e, e.body())
}

/// An error's response with `body` in whichever shape the route speaks (`error_response`,
/// or the Open Inference Protocol's `v2::error`).
fn error_with(e: &ApiError, body: Vec<u8>) -> HttpResponse {
    let status = e.status();
    // 503 and 504 are overload, not faults: counted in metrics and summarized (`server`).
    if status >= 500 && status != 503 && status != 504 {
        log::error!("{status} {}: {e}", e.code());
    } else {
        log::debug!("{status} {}: {e}", e.code());
    }
    let mut resp = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    resp.insert_header((header::CONTENT_TYPE, "application/json"));
    if let Some(secs) = e.retry_after() {
        resp.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    resp.body(body)
}
