//! `GET /execution-parameters`: what a Batch Transform job should send (see `crate::batch`).

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::batch::BatchStrategy;

pub async fn execution_parameters(state: web::Data<AppState>) -> HttpResponse {
    let mut params = state.settings.execution_parameters;
    // A model that cannot take several rows at once would fail every multi-record mini-batch.
    if state.model().is_ok_and(|m| !m.multi_record()) {
        params.batch_strategy = BatchStrategy::SingleRecord;
    }
    HttpResponse::Ok().json(params)
}
