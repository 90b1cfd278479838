//! Large line-oriented bodies (CSV, JSON Lines) scored piece by piece: rows are parsed, scored
//! and written one piece of whole lines at a time, so besides the body (when it is held at all)
//! and the answer a request holds one piece's columns and one ONNX Runtime run, whatever its
//! size. The answer is byte for byte what scoring the body whole gives, and errors name the
//! row (or line) of the whole body.
//!
//! Two sources feed the pieces: a body already read (`score`), or, in Batch Transform mode, the
//! request stream itself (`score_stream`), whose answer is spooled to an unlinked temporary
//! file so that neither side is held in memory, whatever the size (`MaxPayloadInMB=0`: any).

use std::io::{Read, Seek, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::codec::encode::Writer;
use crate::codec::{records, DecodeError, InputFormat, OutputFormat};
use crate::engine::{Admitted, LoadedModel};
use crate::error::ApiError;
use crate::monitor::{Metrics, Stage};

/// Bodies larger than this are scored in pieces of about this size (a few thousand rows).
pub const CHUNK_BYTES: usize = 2 * 1024 * 1024;

pub struct Request<'a> {
    pub model: &'a Arc<LoadedModel>,
    pub ticket: &'a Admitted,
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

/// Scores a body already read, in the given pieces of whole lines.
pub async fn score(
    req: Request<'_>,
    body: Bytes,
    ranges: Vec<Range<usize>>,
) -> Result<Vec<u8>, ApiError> {
    let mut scorer = Scorer::new(req, body.len() / 64);
    for range in ranges {
        scorer.piece(body.slice(range)).await?;
    }
    scorer.finish()
}

/// An answer small enough to hold, or spooled to an unlinked temporary file.
pub enum Answer {
    Memory(Vec<u8>),
    Spool(std::fs::File),
}

/// Answers up to this size stay in memory; larger ones go to a spool file as they grow.
const SPOOL_AT: usize = 4 * 1024 * 1024;

/// Reads, scores and answers a body as it arrives: pieces are cut at the last newline once
/// `CHUNK_BYTES` have arrived, and a large answer goes to a temporary file that the response
/// then streams. Past `limit` bytes (None: no limit) the rest is drained, up to a cap, and the
/// request refused with 413, as for a body read whole.
pub async fn score_stream<S, E>(
    req: Request<'_>,
    mut payload: S,
    limit: Option<usize>,
) -> Result<Answer, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut spool: Option<std::fs::File> = None;
    let mut held = Vec::new();
    let mut scorer = Scorer::new(req, CHUNK_BYTES / 64);
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024);
    let mut seen = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        seen += chunk.len();
        if let Some(limit) = limit.filter(|&l| seen > l) {
            if seen > limit + super::invocations::DRAIN_BYTES {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= CHUNK_BYTES {
            if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
                scorer.piece(buf.split_to(last + 1).freeze()).await?;
                held.extend_from_slice(&scorer.take_bytes());
                if held.len() > SPOOL_AT || spool.is_some() {
                    let file = match spool.as_mut() {
                        Some(file) => file,
                        None => spool.insert(spool_file()?),
                    };
                    spool_write(file, &held)?;
                    held.clear();
                }
            }
        }
    }
    if let Some(limit) = limit.filter(|&l| seen > l) {
        return Err(ApiError::PayloadTooLarge {
            limit,
            given: Some(seen as u64),
        });
    }
    if !buf.is_empty() {
        scorer.piece(buf.freeze()).await?;
    }
    held.extend_from_slice(&scorer.finish()?);
    let Some(mut file) = spool else {
        return Ok(Answer::Memory(held));
    };
    spool_write(&mut file, &held)?;
    file.rewind()
        .map_err(|e| ApiError::Internal(format!("answer spool: {e}")))?;
    Ok(Answer::Spool(file))
}

/// An answer spool that leaves nothing behind: the file is unlinked as soon as it is open.
fn spool_file() -> Result<std::fs::File, ApiError> {
    let fail =
        |e: std::io::Error| ApiError::Internal(format!("cannot create an answer spool: {e}"));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "mlapp-answer-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(fail)?;
    std::fs::remove_file(&path).map_err(fail)?;
    Ok(file)
}

fn spool_write(spool: &mut std::fs::File, bytes: &[u8]) -> Result<(), ApiError> {
    spool
        .write_all(bytes)
        .map_err(|e| ApiError::Internal(format!("answer spool: {e}")))
}

/// Streams a spooled answer in 256 KiB blocks.
pub fn spool_stream(
    file: std::fs::File,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut block = vec![0u8; 256 * 1024];
        // A read from a freshly written temporary file comes from the page cache.
        match file.read(&mut block) {
            Ok(0) => None,
            Ok(n) => {
                block.truncate(n);
                Some((Ok(Bytes::from(block)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

struct Scorer<'a> {
    req: Request<'a>,
    writer: Option<Writer>,
    /// Records and lines of the pieces before this one, to place errors in the whole body.
    rows_before: usize,
    lines_before: usize,
    /// Stage times summed over the pieces and observed once, as for any request.
    decode: Duration,
    queue: Duration,
    inference: Duration,
    encode: Duration,
}

impl<'a> Scorer<'a> {
    fn new(req: Request<'a>, rows_hint: usize) -> Self {
        let writer = Some(Writer::new(req.accept, rows_hint));
        Self {
            req,
            writer,
            rows_before: 0,
            lines_before: 0,
            decode: Duration::ZERO,
            queue: Duration::ZERO,
            inference: Duration::ZERO,
            encode: Duration::ZERO,
        }
    }

    /// Parses, scores and writes one piece of whole lines.
    async fn piece(&mut self, piece: Bytes) -> Result<(), ApiError> {
        let req = &self.req;
        let model = req.model;
        let lines = piece.iter().filter(|&&b| b == b'\n').count();
        let (m, format, placeholders) = (Arc::clone(model), req.format, req.placeholders);
        let t = Instant::now();
        let rows = web::block(move || records::decode(format, &piece, &m.signature, placeholders))
            .await
            .map_err(task_failed)?
            .map_err(|e| e.located(self.rows_before, self.lines_before))?;
        self.decode += t.elapsed();
        let outputs = match rows.frame {
            Some(frame) => {
                let scored = model
                    .engine
                    .score(req.ticket, frame, req.deadline)
                    .await
                    .map_err(|e| ApiError::from_engine(e, req.timeout))?;
                self.queue += scored.queued;
                self.inference += scored.inference;
                Some(scored.outputs)
            }
            None => None,
        };
        let t = Instant::now();
        let (m, mut w) = (
            Arc::clone(model),
            self.writer.take().ok_or_else(|| task_failed("no writer"))?,
        );
        let (bad, total, first_row) = (rows.bad, rows.total, self.rows_before);
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
        self.writer = Some(w);
        self.encode += t.elapsed();
        self.rows_before += total;
        self.lines_before += lines;
        Ok(())
    }

    /// The answer bytes written so far (the writer keeps its place).
    fn take_bytes(&mut self) -> Vec<u8> {
        self.writer.as_mut().map(Writer::take).unwrap_or_default()
    }

    fn finish(self) -> Result<Vec<u8>, ApiError> {
        if self.rows_before == 0 {
            return Err(DecodeError::Empty.into());
        }
        for (stage, took) in [
            (Stage::Decode, self.decode),
            (Stage::Queue, self.queue),
            (Stage::Inference, self.inference),
            (Stage::Encode, self.encode),
        ] {
            self.req.metrics.stage(stage, took);
        }
        self.writer
            .map(Writer::finish)
            .ok_or_else(|| task_failed("no writer"))
    }
}

/// Whether a body can be scored as it arrives: line-oriented formats only. CSV is taken to
/// have no quoted newlines, as Batch Transform requires.
pub fn streamable(format: InputFormat) -> bool {
    matches!(
        format,
        InputFormat::JsonLines | InputFormat::Csv { header: false }
    )
}
