//! `GET /metrics`: the Prometheus text exposition.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut body = state.metrics.render(state.live());
    if let Some(portal) = state.portal.get() {
        match portal.counts().await {
            Ok((jobs, items)) => body.push_str(&crate::portal::metrics_text(&jobs, &items)),
            // The store is down: the model's series still matter.
            Err(e) => log::warn!("/metrics: no job counts: {e}"),
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
