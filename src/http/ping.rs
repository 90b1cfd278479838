//! `GET /ping`: 200 only when the model is loaded and warmed up; 503 with the reason otherwise.
//! In multi-model mode, 200 while the process lives.
//! Answered from the readiness flag alone. HTTP threads start inference only for requests
//! estimated to fit `--inline-budget-ms` (2 ms), and no more once that much of the turn is
//! spent (`engine::pool`), so a ping waits about that long behind it at most.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{AppState, Readiness};

pub async fn ping(state: web::Data<AppState>) -> HttpResponse {
    // A multi-model endpoint's ping is liveness (SageMaker expects 200 whatever models load
    // or fail); the models' own state is under /models.
    if let Some(registry) = &state.registry {
        return HttpResponse::Ok().json(json!({
            "status": "live",
            "models_loaded": registry.loaded_count(),
        }));
    }
    let (status, reason) = match state.readiness() {
        Readiness::Ready(model) => {
            return HttpResponse::Ok().json(json!({
                "status": "ready",
                "model": model.source.file.display().to_string(),
                "kind": model.plan.kind(),
                "provider": model.provider,
                "version": state.status().active.map(|a| a.version),
            }))
        }
        Readiness::Loading(why) => ("loading", why),
        Readiness::Failed(why) => ("failed", why),
    };
    HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
        .json(json!({"status": status, "reason": reason}))
}
