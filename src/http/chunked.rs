//! Large line-oriented bodies (CSV, JSON Lines) scored chunk by chunk: rows are parsed, scored
//! and written one chunk at a time, so besides its body and its answer a request holds one
//! chunk's columns and one chunk's ONNX Runtime run, whatever its size (a 100 MB Batch
//! Transform mini-batch is about 140,000 rows). The answer is byte for byte what scoring the
//! body whole gives.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes};

use crate::codec::encode::Writer;
use crate::codec::{self, records, DecodeError, InputFormat, OutputFormat};
use crate::engine::{Admitted, LoadedModel};
use crate::error::ApiError;
use crate::monitor::{Metrics, Stage};

/// Bodies larger than this are scored in chunks of about this size (a few thousand rows).
pub const CHUNK_BYTES: usize = 2 * 1024 * 1024;

pub struct Request<'a> {
    pub model: &'a Arc<LoadedModel>,
    pub ticket: &'a Admitted<'a>,
    pub metrics: &'a Metrics,
    pub format: InputFormat,
    pub accept: OutputFormat,
    pub deadline: Instant,
    pub timeout: Duration,
    /// Bad records get a placeholder line instead of failing the request.
    pub placeholders: bool,
}

fn task_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("a decode or encode task failed: {e}"))
}

pub async fn score(
    req: Request<'_>,
    body: Bytes,
    ranges: Vec<Range<usize>>,
) -> Result<Vec<u8>, ApiError> {
    let model = req.model;
    let mut writer = Some(Writer::new(req.accept, body.len() / 64));
    let mut rows_before = 0;
    // Stage times are summed over the chunks and observed once, as for any request.
    let (mut decode, mut queue, mut inference, mut encode) = Default::default();
    for range in ranges {
        let piece = body.slice(range);
        let m = Arc::clone(model);
        let (format, placeholders) = (req.format, req.placeholders);
        let t = Instant::now();
        let decoded =
            web::block(move || records::decode(format, &piece, &m.signature, placeholders))
                .await
                .map_err(task_failed)?;
        decode += t.elapsed();
        let rows = match decoded {
            Ok(rows) => rows,
            Err(e) => {
                return Err(match e.after_rows(rows_before) {
                    Some(moved) => moved.into(),
                    // The error's text names a line of the chunk: decode the whole body,
                    // which gives the same error with the body's own line number.
                    None => whole_body_error(model, req.format, body).await,
                });
            }
        };
        let outputs = match rows.frame {
            Some(frame) => {
                let scored = model
                    .engine
                    .score(req.ticket, frame, req.deadline)
                    .await
                    .map_err(|e| ApiError::from_engine(e, req.timeout))?;
                queue += scored.queued;
                inference += scored.inference;
                Some(scored.outputs)
            }
            None => None,
        };
        let t = Instant::now();
        let (m, mut w) = (
            Arc::clone(model),
            writer.take().ok_or_else(|| task_failed("no writer"))?,
        );
        let (bad, total, first_row) = (rows.bad, rows.total, rows_before);
        let w = web::block(move || {
            let predictions = outputs.map(|o| m.plan.apply(o)).transpose()?;
            w.append_records(predictions.as_ref(), &bad, total, first_row)?;
            Ok::<_, String>(w)
        })
        .await
        .map_err(task_failed)?
        .map_err(|m| {
            ApiError::Internal(format!("the model's outputs do not fit its signature: {m}"))
        })?;
        writer = Some(w);
        encode += t.elapsed();
        rows_before += total;
    }
    if rows_before == 0 {
        return Err(DecodeError::Empty.into());
    }
    for (stage, took) in [
        (Stage::Decode, decode),
        (Stage::Queue, queue),
        (Stage::Inference, inference),
        (Stage::Encode, encode),
    ] {
        req.metrics.stage(stage, took);
    }
    writer
        .map(Writer::finish)
        .ok_or_else(|| task_failed("no writer"))
}

async fn whole_body_error(model: &Arc<LoadedModel>, format: InputFormat, body: Bytes) -> ApiError {
    let m = Arc::clone(model);
    match web::block(move || codec::decode(format, &body, &m.signature)).await {
        Ok(Err(e)) => e.into(),
        Ok(Ok(_)) => {
            ApiError::Internal("a chunk failed to decode but the whole body did not".into())
        }
        Err(e) => task_failed(e),
    }
}
