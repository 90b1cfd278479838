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
use crate::codec::{self, DecodeError, Frame, InputFormat, OutputFormat};
use crate::engine::{Admitted, LoadedModel};
use crate::error::ApiError;
use crate::model::ModelSignature;
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

/// A chunk's rows: all good, or (placeholder mode) the good ones and the reasons of the
/// bad ones, by their index among the chunk's rows.
struct Rows {
    frame: Option<Frame>,
    bad: Vec<(usize, String)>,
    total: usize,
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
        let decoded = web::block(move || match codec::decode(format, &piece, &m.signature) {
            Ok(frame) => Ok(Rows {
                total: frame.rows,
                frame: Some(frame),
                bad: Vec::new(),
            }),
            Err(DecodeError::Empty) => Ok(Rows {
                frame: None,
                bad: Vec::new(),
                total: 0,
            }),
            Err(_) if placeholders => Ok(line_by_line(format, &piece, &m.signature)),
            Err(e) => Err(e),
        })
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
            let mut bad = bad.into_iter().peekable();
            let mut good = 0;
            for i in 0..total {
                match (bad.next_if(|(at, _)| *at == i), &predictions) {
                    (Some((_, reason)), _) => w.append_error(&reason_at(first_row + i, &reason)),
                    (None, Some(p)) => {
                        w.append_row(p, good);
                        good += 1;
                    }
                    (None, None) => return Err("a good row without predictions".to_string()),
                }
            }
            Ok(w)
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

/// Placeholder mode, for a chunk that failed to decode: each line decoded alone, the good
/// ones then decoded together. Only chunks with a bad record pay for this.
fn line_by_line(format: InputFormat, piece: &[u8], sig: &ModelSignature) -> Rows {
    let mut good = Vec::with_capacity(piece.len());
    let mut bad = Vec::new();
    let mut total = 0;
    for line in piece.split(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        // The decoders skip these lines too: they are not records.
        let blank = match format {
            InputFormat::JsonLines => text.iter().all(u8::is_ascii_whitespace),
            _ => text.is_empty(),
        };
        if blank {
            continue;
        }
        match codec::decode(format, text, sig) {
            Ok(_) => {
                good.extend_from_slice(text);
                good.push(b'\n');
            }
            Err(e) => bad.push((total, e.to_string())),
        }
        total += 1;
    }
    // Every good line decoded alone, so together they decode too.
    let frame = (!good.is_empty())
        .then(|| codec::decode(format, &good, sig).ok())
        .flatten();
    Rows { frame, bad, total }
}

/// A bad record's reason with the row it has in the whole body (0-based `row`). Reasons of
/// a record decoded alone say "row 1" or "line 1"; that is replaced.
fn reason_at(row: usize, reason: &str) -> String {
    let detail = ["row 1: ", "row 1, ", "line 1: ", "CSV line 1: "]
        .iter()
        .find_map(|p| {
            reason
                .strip_prefix(p)
                .map(|rest| (p.starts_with("row 1, "), rest))
        });
    match detail {
        Some((true, rest)) => format!("row {}, {rest}", row + 1),
        Some((false, rest)) => format!("row {}: {rest}", row + 1),
        None => format!("row {}: {reason}", row + 1),
    }
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
