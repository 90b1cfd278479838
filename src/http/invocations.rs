//! `POST /invocations`: negotiate, read the body within the limit, decode against the model's
//! signature, score on the engine, encode.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::{error_response, AppState};
use crate::codec::{self, media, OutputFormat};
use crate::engine::LoadedModel;
use crate::error::ApiError;

/// Bodies up to this size are decoded on the HTTP worker; larger ones on the blocking pool,
/// so one big request does not stall every connection of that worker.
const INLINE_DECODE_BYTES: usize = 64 * 1024;
/// After the limit is passed, at most this much more is read (and dropped) so the client can
/// finish sending and read the 413; beyond that the connection is closed.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;

pub async fn invocations(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let timeout = state.settings.timeout;
    let deadline = Instant::now() + timeout;
    let result =
        tokio::time::timeout_at(deadline.into(), handle(&req, payload, &state, deadline)).await;
    match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => error_response(&e),
        Err(_) => error_response(&ApiError::Timeout(timeout.as_secs_f64())),
    }
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    deadline: Instant,
) -> Result<HttpResponse, ApiError> {
    let model = state.model().map_err(ApiError::NotReady)?;
    let settings = &state.settings;
    let accept = media::output_format(header_str(req, header::ACCEPT), settings.default_accept)?;
    let declared = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let body = read_body(payload, settings.max_payload_bytes, declared).await?;
    let format = media::input_format(
        header_str(req, header::CONTENT_TYPE),
        &settings.default_content_type,
        model.source.config.csv_header,
        &body[..body.len().min(8)],
    )?;
    let frame = if body.len() <= INLINE_DECODE_BYTES {
        codec::decode(format, &body, &model.signature)?
    } else {
        let m = Arc::clone(&model);
        web::block(move || codec::decode(format, &body, &m.signature))
            .await
            .map_err(|e| ApiError::Internal(format!("decode task failed: {e}")))??
    };
    let rows = frame.rows;
    let outputs = model
        .engine
        .submit(frame, deadline)
        .map_err(|e| ApiError::from_engine(e, settings.timeout))?
        .await
        .map_err(|_| ApiError::Internal("the inference worker dropped the request".into()))?
        .map_err(|e| ApiError::from_engine(e, settings.timeout))?;
    let body = if rows * model.signature.features.len() <= INLINE_DECODE_BYTES / 8 {
        encode(&model, outputs, accept)?
    } else {
        let m = Arc::clone(&model);
        web::block(move || encode(&m, outputs, accept))
            .await
            .map_err(|e| ApiError::Internal(format!("encode task failed: {e}")))??
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, accept.mime()))
        .body(body))
}

fn encode(
    model: &LoadedModel,
    outputs: crate::model::Outputs,
    accept: OutputFormat,
) -> Result<Vec<u8>, ApiError> {
    let predictions = model.plan.apply(outputs).map_err(|m| {
        ApiError::Internal(format!("the model's outputs do not fit its signature: {m}"))
    })?;
    Ok(codec::encode(&predictions, accept))
}

/// Reads the whole body, refusing it past `limit`. A declared Content-Length over the limit
/// is refused before reading; a body that grows past it is drained (up to a cap) so that the
/// client reads a 413 rather than a reset connection.
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    declared: Option<u64>,
) -> Result<web::BytesMut, ApiError> {
    let too_large = |given| ApiError::PayloadTooLarge { limit, given };
    let mut body =
        web::BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n.min(limit as u64) as usize));
    let mut seen: u64 = 0;
    let mut over = declared.is_some_and(|n| n > limit as u64);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        seen += chunk.len() as u64;
        if over || seen > limit as u64 {
            over = true;
            body.clear();
            if seen > (limit + DRAIN_BYTES) as u64 {
                break;
            }
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if over {
        return Err(too_large(declared.or(Some(seen))));
    }
    Ok(body)
}
