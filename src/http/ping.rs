//! `GET /ping`: 200 only when the model is loaded and warmed up; 503 with the reason otherwise.
//! Answered from the readiness flag alone, never behind inference work.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn ping(state: web::Data<AppState>) -> HttpResponse {
    match state.status() {
        ("ready", _, Some(model)) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "model": model.source.file.display().to_string(),
            "kind": model.plan.kind(),
        })),
        (status, reason, _) => HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
            .json(json!({"status": status, "reason": reason})),
    }
}
