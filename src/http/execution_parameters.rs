//! `GET /execution-parameters`: what a Batch Transform job should send (see `crate::batch`).

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn execution_parameters(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.settings.execution_parameters)
}
