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
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::codec::encode::Writer;
use crate::codec::lines::{LineCutter, LineEnds, RecordTooLong};
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

/// The most bytes one record of a streamed body may have. Without a bound, a body with no
/// line end (a CR-only JSON Lines file, a JSON array sent as JSON Lines) would be held whole,
/// which streaming exists to avoid, `MaxPayloadInMB=0` putting no limit on the body at all.
/// Eight pieces is far more than any tabular row needs.
pub const MAX_RECORD_BYTES: usize = 8 * CHUNK_BYTES;

/// Why a streamed body is refused once it is drained.
enum Refusal {
    /// Over this limit; the message gives the size seen.
    Payload(usize),
    Record(RecordTooLong),
    /// What the stream holds would pass the body memory budget.
    Budget(ApiError),
}

/// Reads, scores and answers a body as it arrives: pieces are cut at the last line end once
/// `CHUNK_BYTES` have arrived, and a large answer goes to a temporary file that the response
/// then streams. Past `limit` bytes (None: no limit), or once one record passes
/// `MAX_RECORD_BYTES`, the rest is drained, up to a cap, and the request refused with 413, as
/// for a body read whole.
///
/// `hold` is told how many bytes of the body and answer the stream holds in memory at most
/// (a record may grow `buf` to `MAX_RECORD_BYTES`), so that streams count against the same
/// memory budget as bodies read whole; it refuses with the error to answer.
pub async fn score_stream<S>(
    req: Request<'_>,
    mut payload: S,
    limit: Option<usize>,
    mut hold: impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<Answer, ApiError>
where
    S: Stream<Item = Result<Bytes, ApiError>> + Unpin,
{
    let mut cutter = LineCutter::new(LineEnds::of(req.format), MAX_RECORD_BYTES);
    let mut spool = Spool::default();
    let mut scorer = Scorer::new(req, CHUNK_BYTES / 64);
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024);
    // The body's offset of `buf[0]`, to turn the cutter's offsets into `buf`'s.
    let mut cut = 0u64;
    let mut seen = 0usize;
    // Why the body is refused, and from what size on it is only drained.
    let mut refused: Option<(Refusal, usize)> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        seen += chunk.len();
        if refused.is_none() {
            if let Some(limit) = limit.filter(|&l| seen > l) {
                refused = Some((Refusal::Payload(limit), limit));
            } else if let Err(e) = cutter.feed(&chunk) {
                refused = Some((Refusal::Record(e), seen));
            } else if let Err(e) = hold(buf.len() + chunk.len() + spool.held.len()) {
                refused = Some((Refusal::Budget(e), seen));
            }
            if refused.is_some() {
                buf = BytesMut::new();
            }
        }
        if let Some((_, from)) = &refused {
            if seen > from + super::invocations::DRAIN_BYTES {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= CHUNK_BYTES {
            let whole = (cutter.last_end() - cut) as usize;
            if whole > 0 {
                cut += whole as u64;
                scorer.piece(buf.split_to(whole).freeze()).await?;
                spool.push(scorer.take_bytes()).await?;
            }
        }
    }
    match refused {
        Some((Refusal::Payload(limit), _)) => {
            return Err(ApiError::PayloadTooLarge {
                limit,
                given: Some(seen as u64),
            })
        }
        Some((Refusal::Record(e), _)) => return Err(e.into()),
        Some((Refusal::Budget(e), _)) => return Err(e),
        None => {}
    }
    if !buf.is_empty() {
        scorer.piece(buf.freeze()).await?;
    }
    spool.finish(scorer.finish()?).await
}

/// A streamed answer as it grows: held up to `SPOOL_AT`, then written to an unlinked
/// temporary file (`tempfile`: O_TMPFILE where there is one, so no name to guess or
/// pre-create). File I/O runs on the blocking pool: under dirty-page throttling a write can
/// block for long, and the event loop serves every connection of its worker.
#[derive(Default)]
struct Spool {
    held: Vec<u8>,
    file: Option<std::fs::File>,
}

impl Spool {
    async fn push(&mut self, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.held.extend_from_slice(&bytes);
        if self.held.len() > SPOOL_AT || self.file.is_some() {
            self.write(false).await?;
        }
        Ok(())
    }

    async fn finish(mut self, last: Vec<u8>) -> Result<Answer, ApiError> {
        self.held.extend_from_slice(&last);
        if self.file.is_none() {
            return Ok(Answer::Memory(self.held));
        }
        self.write(true).await?;
        self.file
            .map(Answer::Spool)
            .ok_or_else(|| task_failed("no answer spool"))
    }

    /// Writes what is held to the file (created on the first write), then rewinds it for
    /// reading if `rewind`.
    async fn write(&mut self, rewind: bool) -> Result<(), ApiError> {
        let (file, held) = (self.file.take(), std::mem::take(&mut self.held));
        let (file, mut held) = web::block(move || {
            let mut file = match file {
                Some(file) => file,
                None => tempfile::tempfile()
                    .map_err(|e| format!("cannot create an answer spool: {e}"))?,
            };
            file.write_all(&held)
                .and_then(|()| if rewind { file.rewind() } else { Ok(()) })
                .map_err(|e| format!("answer spool: {e}"))?;
            Ok::<_, String>((file, held))
        })
        .await
        .map_err(task_failed)?
        .map_err(ApiError::Internal)?;
        held.clear();
        (self.file, self.held) = (Some(file), held);
        Ok(())
    }
}

/// Streams a spooled answer in 256 KiB blocks, each read on the blocking pool.
pub fn spool_stream(
    file: std::fs::File,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = web::block(move || {
            let mut block = vec![0u8; 256 * 1024];
            let n = file.read(&mut block);
            n.map(|n| {
                block.truncate(n);
                (file, block)
            })
        })
        .await;
        match read {
            Ok(Ok((_, block))) if block.is_empty() => None,
            Ok(Ok((file, block))) => Some((Ok(Bytes::from(block)), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
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
