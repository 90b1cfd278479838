//! The portal's routes under `/api/providers/prediction/`: thin, everything is in `portal`.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::portal::{Portal, PortalError};

/// A job definition is a few hundred bytes; this is generous.
const MAX_BODY: usize = 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/providers/prediction")
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/create", web::post().to(create))
            .route("/invoke", web::post().to(invoke))
            .route("/check", web::get().to(check))
            .route("/stop", web::post().to(stop))
            .route("/list", web::get().to(list))
            .route("/evaluate", web::post().to(evaluate))
            .route("/report", web::get().to(report)),
    );
}

fn portal(state: &AppState) -> Result<Arc<Portal>, PortalError> {
    match (state.portal.get(), state.portal_wait()) {
        (Some(p), _) => Ok(Arc::clone(p)),
        (None, Some(why)) => Err(PortalError::Start(why)),
        (None, None) => Err(PortalError::Off),
    }
}

fn failure(e: &PortalError) -> HttpResponse {
    let status = e.status();
    if status >= 500 {
        log::error!("portal: {status} {}: {e}", e.code());
    }
    let mut error = json!({"code": e.code(), "message": e.to_string()});
    if let Some(field) = e.field() {
        error["field"] = json!(field);
    }
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(json!({ "error": error }))
}

fn answer(r: Result<(u16, Value), PortalError>) -> HttpResponse {
    match r {
        Ok((status, body)) => {
            let mut resp = HttpResponse::build(
                actix_web::http::StatusCode::from_u16(status)
                    .unwrap_or(actix_web::http::StatusCode::OK),
            );
            if status == 201 || status == 202 {
                if let Some(check) = body["check"].as_str() {
                    resp.insert_header((actix_web::http::header::LOCATION, check.to_string()));
                }
            }
            resp.json(body)
        }
        Err(e) => failure(&e),
    }
}

#[derive(Deserialize)]
struct NameQuery {
    name: Option<String>,
}

/// The job's name from the query or a JSON body `{"name": ...}`.
fn name_of(query: &NameQuery, body: &[u8]) -> Result<String, PortalError> {
    if let Some(n) = &query.name {
        return Ok(n.clone());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(crate::portal::spec::invalid(
            "name",
            "missing: give ?name= or {\"name\": ...}",
        )
        .into());
    }
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    serde_json::from_slice::<Named>(body)
        .map(|n| n.name)
        .map_err(|e| crate::portal::spec::invalid("body", e.to_string()).into())
}

async fn create(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    answer(async { portal(&state)?.create(body.to_vec()).await }.await)
}

async fn invoke(
    state: web::Data<AppState>,
    q: web::Query<NameQuery>,
    body: web::Bytes,
) -> HttpResponse {
    answer(async { portal(&state)?.invoke(name_of(&q, &body)?).await }.await)
}

async fn stop(
    state: web::Data<AppState>,
    q: web::Query<NameQuery>,
    body: web::Bytes,
) -> HttpResponse {
    answer(async { portal(&state)?.stop(name_of(&q, &body)?).await }.await)
}

async fn check(state: web::Data<AppState>, q: web::Query<NameQuery>) -> HttpResponse {
    answer(async { Ok((200, portal(&state)?.check(name_of(&q, b"")?).await?)) }.await)
}

async fn evaluate(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    answer(async { portal(&state)?.evaluate(body.to_vec()).await }.await)
}

/// `?status=InProgress&label=series:gender&label=month:2026-11&limit=50`
async fn list(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    answer(
        async {
            let (mut status, mut labels, mut limit) = (None, Vec::new(), 100usize);
            for (k, v) in form_pairs(req.query_string()) {
                match k.as_str() {
                    "status" => status = Some(v),
                    "label" => {
                        let (lk, lv) = v.split_once(':').ok_or_else(|| {
                            crate::portal::spec::invalid("label", format!("{v:?} is not key:value"))
                        })?;
                        labels.push((lk.to_string(), lv.to_string()));
                    }
                    "series" => labels.push(("series".into(), v)),
                    "limit" => {
                        limit = v
                            .parse()
                            .ok()
                            .filter(|l| (1..=1000).contains(l))
                            .ok_or_else(|| {
                                crate::portal::spec::invalid(
                                    "limit",
                                    format!("{v:?}: give 1 to 1000"),
                                )
                            })?
                    }
                    other => {
                        return Err(crate::portal::spec::invalid(
                            other,
                            "unknown parameter: list takes status, label, series and limit",
                        )
                        .into())
                    }
                }
            }
            Ok((200, portal(&state)?.list(status, labels, limit).await?))
        }
        .await,
    )
}

/// The evaluation as a page a person reads: no script, no network, curves as inline SVG.
async fn report(state: web::Data<AppState>, q: web::Query<NameQuery>) -> HttpResponse {
    let found = async { portal(&state)?.evaluation(name_of(&q, b"")?).await }.await;
    match found {
        Ok((job, eval)) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(crate::portal::report::page(
                &job.name,
                &job.model_uri,
                &eval,
            )),
        Err(e) => failure(&e),
    }
}

/// The query's pairs in order, decoded; repeated keys kept (`label=a:1&label=b:2`).
fn form_pairs(q: &str) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(q)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}
