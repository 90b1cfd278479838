//! `POST /invocations`: negotiate, read the body within the limit, decode against the model's
//! signature, score on the engine, encode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::{chunked, error_response, AppState};
use crate::batch::BadRecords;
use crate::codec::{self, media, OutputFormat};
use crate::engine::LoadedModel;
use crate::error::ApiError;
use crate::monitor::Stage;

/// Bodies up to this size are decoded on the HTTP worker; larger ones on the blocking pool,
/// so one big request does not stall every connection of that worker.
const INLINE_DECODE_BYTES: usize = 64 * 1024;
/// After the limit is passed, at most this much more is read (and dropped) so the client can
/// finish sending and read the 413; beyond that the connection is closed.
pub(super) const DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// A client may ask for a shorter deadline than the server's timeout with this header
/// (milliseconds); it cannot ask for a longer one.
pub const TIMEOUT_HEADER: &str = "x-mlapp-timeout-ms";

/// The model a request was served by, left in the request's extensions for the metrics.
#[derive(Clone)]
pub struct ServedBy(pub Arc<str>);

pub async fn invocations(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let timeout = match request_timeout(&req, state.settings.timeout) {
        Ok(t) => t,
        Err(e) => return reject(&state, &e),
    };
    let deadline = started + timeout;
    let result = tokio::time::timeout_at(
        deadline.into(),
        handle(&req, payload, &state, deadline, timeout),
    )
    .await;
    match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => reject(&state, &e),
        Err(_) => reject(&state, &ApiError::Timeout(timeout.as_secs_f64())),
    }
}

fn reject(state: &AppState, e: &ApiError) -> HttpResponse {
    state.metrics.rejected(e.code());
    error_response(e)
}

fn request_timeout(req: &HttpRequest, server: Duration) -> Result<Duration, ApiError> {
    let Some(v) = req.headers().get(TIMEOUT_HEADER) else {
        return Ok(server);
    };
    let ms = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .ok_or_else(|| {
            ApiError::BadHeader(format!(
                "{TIMEOUT_HEADER} must be a positive number of milliseconds, got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ))
        })?;
    Ok(server.min(Duration::from_secs_f64(ms / 1e3)))
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    deadline: Instant,
    timeout: Duration,
) -> Result<HttpResponse, ApiError> {
    let model = state.model().map_err(ApiError::NotReady)?;
    req.extensions_mut()
        .insert(ServedBy(Arc::clone(&model.name)));
    let ticket = model
        .engine
        .admit()
        .map_err(|e| ApiError::from_engine(e, timeout))?;
    let settings = &state.settings;
    let metrics = &state.metrics;
    let accept_header = header_str(req, header::ACCEPT);
    // Refused before the body is read; the body's format may still pick the type (below).
    media::output_format(accept_header, settings.default_accept)?;
    let answer_to = |format| {
        let like_input = settings
            .answer_like_input
            .then(|| media::line_answer(format));
        media::output_format(
            accept_header,
            like_input.flatten().unwrap_or(settings.default_accept),
        )
    };
    let placeholders = settings.bad_records == BadRecords::Placeholder;
    let declared = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let piece_request = |format, accept| chunked::Request {
        model: &model,
        ticket: &ticket,
        metrics,
        format,
        accept,
        deadline,
        timeout,
        placeholders,
    };
    if settings.stream_bodies && model.batching {
        let format = media::input_format(
            header_str(req, header::CONTENT_TYPE),
            &settings.default_content_type,
            model.source.config.csv_header,
            b"",
        )?;
        if chunked::streamable(format) {
            let accept = answer_to(format)?;
            let req = piece_request(format, accept);
            let limit = (!settings.unbounded_bodies).then_some(settings.max_payload_bytes);
            if let Some(limit) = limit.filter(|&l| declared.is_some_and(|d| d > l as u64)) {
                // Refused before anything is scored; drained as a body read whole would be.
                return Err(read_body(payload, limit, declared).await.err().unwrap_or(
                    ApiError::PayloadTooLarge {
                        limit,
                        given: declared,
                    },
                ));
            }
            let mut resp = HttpResponse::Ok();
            resp.insert_header((header::CONTENT_TYPE, accept.mime()));
            return Ok(match chunked::score_stream(req, payload, limit).await? {
                chunked::Answer::Memory(bytes) => resp.body(bytes),
                chunked::Answer::Spool(file) => resp.streaming(chunked::spool_stream(file)),
            });
        }
    }
    let body = read_body(payload, settings.max_payload_bytes, declared).await?;
    let format = media::input_format(
        header_str(req, header::CONTENT_TYPE),
        &settings.default_content_type,
        model.source.config.csv_header,
        &body[..body.len().min(8)],
    )?;
    let accept = answer_to(format)?;
    // Line-oriented bodies go chunk by chunk when large, and always in placeholder mode,
    // which scores the good lines of a chunk with bad ones.
    if model.batching {
        let ranges = codec::row_chunks(format, &body, chunked::CHUNK_BYTES).or_else(|| {
            (placeholders && codec::line_oriented(format, &body))
                .then(|| std::iter::once(0..body.len()).collect())
        });
        if let Some(ranges) = ranges {
            let req = piece_request(format, accept);
            let answer = chunked::score(req, body.freeze(), ranges).await?;
            return Ok(HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, accept.mime()))
                .body(answer));
        }
    }
    let t = Instant::now();
    let frame = if body.len() <= INLINE_DECODE_BYTES {
        codec::decode(format, &body, &model.signature)?
    } else {
        let m = Arc::clone(&model);
        web::block(move || codec::decode(format, &body, &m.signature))
            .await
            .map_err(|e| ApiError::Internal(format!("decode task failed: {e}")))??
    };
    metrics.stage(Stage::Decode, t.elapsed());
    let rows = frame.rows;
    let scored = model
        .engine
        .score(&ticket, frame, deadline)
        .await
        .map_err(|e| ApiError::from_engine(e, timeout))?;
    metrics.stage(Stage::Queue, scored.queued);
    metrics.stage(Stage::Inference, scored.inference);
    let t = Instant::now();
    let outputs = scored.outputs;
    let body = if rows * model.signature.features.len() <= INLINE_DECODE_BYTES / 8 {
        encode(&model, outputs, accept)?
    } else {
        let m = Arc::clone(&model);
        web::block(move || encode(&m, outputs, accept))
            .await
            .map_err(|e| ApiError::Internal(format!("encode task failed: {e}")))??
    };
    metrics.stage(Stage::Encode, t.elapsed());
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
