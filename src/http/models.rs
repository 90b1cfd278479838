//! SageMaker's multi-model API: `GET /models` (paginated), `POST /models`,
//! `GET /models/{name}`, `DELETE /models/{name}` and `POST /models/{name}/invoke`.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{error_response, AppState};
use crate::error::ApiError;
use crate::registry::{Registry, RegistryError};

/// The most models one page lists (MMS's cap).
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/models")
            .route(web::get().to(list))
            .route(web::post().to(load))
            .default_service(web::to(|| not_allowed("GET or POST"))),
    )
    .service(
        web::resource("/models/{name}")
            .route(web::get().to(describe))
            .route(web::delete().to(unload))
            .default_service(web::to(|| not_allowed("GET or DELETE"))),
    )
    .service(
        web::resource("/models/{name}/invoke")
            .route(web::post().to(super::invocations::invoke_named))
            .default_service(web::to(|| not_allowed("POST"))),
    );
}

async fn not_allowed(allowed: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(json!({"error": {
        "code": "method_not_allowed",
        "message": format!("this route answers {allowed}"),
    }}))
}

fn registry(state: &AppState) -> Result<&Arc<Registry>, Box<HttpResponse>> {
    state.registry.as_ref().ok_or_else(|| {
        Box::new(error_response(&ApiError::Registry(
            RegistryError::NotFound(
                "this server serves one model: the /models API is there in multi-model mode \
             (SAGEMAKER_MULTI_MODEL=true, or --model-repository)"
                    .into(),
            ),
        )))
    })
}

#[derive(Deserialize)]
struct Page {
    next_page_token: Option<String>,
    limit: Option<String>,
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let reg = match registry(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let page = match web::Query::<Page>::from_query(req.query_string()) {
        Ok(p) => p.into_inner(),
        Err(e) => return bad(format!("query string: {e}")),
    };
    let limit = match page.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        _ => {
            return bad(format!(
                "limit must be a whole number from 1 to {MAX_PAGE}, got {:?}",
                page.limit.unwrap_or_default()
            ))
        }
    };
    // The token is the name the next page starts at, so pages stay consistent while models
    // come and go between calls.
    let models = reg.list();
    let start = page.next_page_token.as_deref().map_or(0, |after| {
        models.partition_point(|m| m.model_name.as_str() < after)
    });
    let rest = &models[start.min(models.len())..];
    let (shown, more) = rest.split_at(limit.min(rest.len()));
    let mut body = json!({"models": shown});
    if let Some(next) = more.first() {
        body["nextPageToken"] = json!(next.model_name);
    }
    HttpResponse::Ok().json(body)
}

/// Other fields (MMS's `initial_workers`, ...) are accepted and ignored.
#[derive(Deserialize)]
struct LoadRequest {
    model_name: String,
    url: String,
}

async fn load(body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let reg = match registry(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let asked: LoadRequest = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            // The contract's own sample body is not valid JSON: worth seeing in the log.
            log::warn!("POST /models: a body that is not the load request: {e}");
            return bad(format!(
                "the body must be JSON {{\"model_name\": \"...\", \"url\": \"...\"}}: {e}"
            ));
        }
    };
    match reg.load(&asked.model_name, &asked.url).await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": format!("model {:?} loaded", asked.model_name),
        })),
        Err(e) => error_response(&ApiError::Registry(e)),
    }
}

async fn describe(name: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let reg = match registry(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match reg.describe(&name) {
        Some(d) => HttpResponse::Ok().json(d),
        None => error_response(&ApiError::Registry(RegistryError::NotFound(format!(
            "model {:?} is not loaded",
            name.as_str()
        )))),
    }
}

async fn unload(name: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let reg = match registry(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match reg.unload(&name).await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": format!("model {:?} unloaded", name.as_str()),
        })),
        Err(e) => error_response(&ApiError::Registry(e)),
    }
}

fn bad(message: String) -> HttpResponse {
    error_response(&ApiError::Registry(RegistryError::Invalid(message)))
}
