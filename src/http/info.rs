//! `GET /info`: which model version is serving, where it came from, and how the last reload
//! went. Not under `/models`, which belongs to the multi-model API.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{AppState, Readiness};

pub async fn info(state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = &state.registry {
        return HttpResponse::Ok().json(json!({
            "status": "live",
            "mode": "multi-model",
            "repository": r.repository(),
            "memory_budget_bytes": r.budget(),
            "models": r.list(),
            "mlapp_version": env!("CARGO_PKG_VERSION"),
        }));
    }
    let status = match state.readiness() {
        Readiness::Ready(_) => "ready",
        Readiness::Loading(_) => "loading",
        Readiness::Failed(_) => "failed",
    };
    let s = state.status();
    HttpResponse::Ok().json(json!({
        "status": status,
        "uri": s.uri,
        "model": s.active,
        "last_reload": s.last_reload,
        "reloads": {"succeeded": s.reloads_succeeded, "failed": s.reloads_failed},
        "last_failed_version": s.last_failed_version,
        "last_failed_reason": s.last_failed_reason,
        "mlapp_version": env!("CARGO_PKG_VERSION"),
    }))
}
