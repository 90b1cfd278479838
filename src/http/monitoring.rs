//! `GET /monitoring`: the current window's statistics and violations, and the last closed
//! window's, in Model Monitor's layouts; and the shadow challenger's comparison, when there is one.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn monitoring(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let shadow = state.shadow.get().map(|s| s.view());
    let model = match &state.registry {
        // In multi-model mode, `?model=name` picks one.
        Some(registry) => {
            let Some(name) = web::Query::<Which>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.into_inner().model)
            else {
                return off(
                    "model_required",
                    "this server serves many models: name one with ?model=",
                );
            };
            match registry.models().into_iter().find(|m| *m.name == *name) {
                Some(m) => m,
                None => return off("model_not_found", &format!("model {name:?} is not loaded")),
            }
        }
        None => match state.model() {
            Ok(m) => m,
            Err(why) => return off("model_not_ready", &why),
        },
    };
    let Some(monitor) = model.monitor.clone() else {
        if let Some(shadow) = shadow {
            return HttpResponse::Ok().json(serde_json::json!({"shadow": shadow}));
        }
        return off(
            "monitoring_off",
            "live monitoring is off: the model folder has no baseline/ and no --baseline-uri \
             was given (or --monitoring off)",
        );
    };
    // Merging the shards' sketches takes a few milliseconds: not on an HTTP thread.
    match web::block(move || monitor.view()).await {
        Ok(view) => match (serde_json::to_value(view), shadow) {
            (Ok(mut v), Some(shadow)) => {
                v["shadow"] = serde_json::json!(shadow);
                HttpResponse::Ok().json(v)
            }
            (Ok(v), None) => HttpResponse::Ok().json(v),
            (Err(e), _) => HttpResponse::InternalServerError().json(serde_json::json!({
                "error": {"code": "internal_error", "message": format!("monitoring view: {e}")}
            })),
        },
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({
            "error": {"code": "internal_error", "message": format!("monitoring view failed: {e}")}
        })),
    }
}

#[derive(serde::Deserialize)]
struct Which {
    model: Option<String>,
}

fn off(code: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    if code == "model_required" {
        HttpResponse::BadRequest().json(body)
    } else if matches!(code, "monitoring_off" | "model_not_found") {
        HttpResponse::NotFound().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
