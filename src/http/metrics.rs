//! `GET /metrics`: the Prometheus text exposition.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut body = state.metrics.render(state.live());
    if let Some(c) = &state.capture {
        crate::monitor::capture_metrics(&c.stats(), &mut body);
    }
    if let Some(m) = state.model().ok().and_then(|m| m.monitor.clone()) {
        m.render(&mut body);
    }
    // Each model's monitoring series are under GET /monitoring?model=: written here, every
    // model would repeat the families' headers, which strict scrapers refuse.
    if let Some(r) = &state.registry {
        r.render(&mut body);
    }
    if let Some(s) = state.shadow.get() {
        s.render(&mut body);
    }
    if let Some(portal) = state.portal.get() {
        if let Some((jobs, items)) = portal.counts() {
            body.push_str(&crate::portal::metrics_text(&jobs, &items));
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
