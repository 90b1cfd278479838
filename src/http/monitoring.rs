//! `GET /monitoring`: the current window's statistics and violations, and the last closed
//! window's, in Model Monitor's layouts.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn monitoring(state: web::Data<AppState>) -> HttpResponse {
    let model = match state.model() {
        Ok(m) => m,
        Err(why) => return off("model_not_ready", &why),
    };
    let Some(monitor) = model.monitor.clone() else {
        return off(
            "monitoring_off",
            "live monitoring is off: the model folder has no baseline/ and no --baseline-uri \
             was given (or --monitoring off)",
        );
    };
    // Merging the shards' sketches takes a few milliseconds: not on an HTTP thread.
    match web::block(move || monitor.view()).await {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({
            "error": {"code": "internal", "message": format!("monitoring view failed: {e}")}
        })),
    }
}

fn off(code: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    if code == "monitoring_off" {
        HttpResponse::NotFound().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
