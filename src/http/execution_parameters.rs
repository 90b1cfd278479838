//! `GET /execution-parameters`: what a Batch Transform job should send (see `crate::batch`).

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::batch::BatchStrategy;

pub async fn execution_parameters(state: web::Data<AppState>) -> HttpResponse {
    let mut params = state.settings.execution_parameters;
    // A model that takes exactly one row, and whose runs cannot be joined, would fail every
    // multi-record mini-batch. (One that takes exactly k > 1 rows fits neither strategy:
    // requests of any other size get 422 naming k.)
    if state
        .model()
        .is_ok_and(|m| !m.multi_record() && m.signature.fixed_batch == Some(1))
    {
        params.batch_strategy = BatchStrategy::SingleRecord;
    }
    HttpResponse::Ok().json(params)
}
