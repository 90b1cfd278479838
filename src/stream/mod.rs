//! The one streaming scorer: how every large input is scored, whoever brings it. A large or
//! streamed body of `POST /invocations` (real-time and Batch Transform), each file of
//! `mlapp transform`, and the portal's work items all come here; `http/` and `transform/`
//! only say where the bytes come from and where the answer goes.
//!
//! 1. A [`Source`] hands over bytes (an HTTP body as it arrives, a body already read, a
//!    file). The cutter finds line ends once, as bytes arrive (no rescan), and cuts pieces
//!    of whole records of about `chunk_bytes`.
//! 2. Each piece is a task of its own: parsed on a pool of one thread per CPU (`workers`),
//!    scored by the model's engine on whichever session is free, its answer lines encoded on
//!    the same pool.
//!    Up to `window` pieces are in flight, so while one piece is scored the next ones are
//!    parsed, and a single large input keeps every session busy.
//! 3. Answers are taken in input order and written to a [`Sink`] (a spool for an HTTP
//!    answer, a file). Rows and lines of errors and placeholders are numbered from the
//!    input's start there, where the rows before each piece are known.
//!
//! Memory holds the open record, `window` pieces with their frames and answers, and what
//! the sink buffers, whatever the input's size. Bad records follow the one policy: the input
//! fails naming the row (and line), or each gets a placeholder line. Cancelling is dropping
//! the future (pieces in flight are aborted); `deadline` bounds every run. A panic in any
//! task fails the input with a message, never a hang.

mod cut;
mod sink;
mod source;
mod workers;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::encode::{closing, opening, Writer};
use crate::codec::lines::RecordTooLong;
use crate::codec::{records, DecodeError, InputFormat, OutputFormat};
use crate::engine::{Admitted, EngineError, LoadedModel};
use crate::model::{Outputs, Predictions};
use cut::Cutter;
pub use sink::{spool_stream, Answer, FileSink, Sink, Spool};
pub use source::{FileSource, Source, Whole};

/// The most bytes one record may have. Without a bound, an input with no line end (a CR-only
/// JSON Lines file, a JSON array sent as JSON Lines) would be held whole, which streaming
/// exists to avoid.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// How an input is split into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// One record per line (CSV without header or quotes, JSON Lines), scored in pieces.
    Line,
    /// The whole input is one body in any format, read whole and scored as one piece.
    Whole,
}

/// What to score and how.
pub struct Job {
    pub model: Arc<LoadedModel>,
    /// The input's admission: one ticket covers all its pieces.
    pub ticket: Arc<Admitted>,
    pub format: InputFormat,
    pub accept: OutputFormat,
    pub split: Split,
    /// Bad records get a placeholder line instead of failing the input.
    pub placeholders: bool,
    pub deadline: Instant,
    pub chunk_bytes: usize,
    /// The most bytes one record may have (`MAX_RECORD_BYTES` for an input of any size; a
    /// body already read whole is bounded by its own limit).
    pub max_record: usize,
    /// Pieces in flight at once (at least 1).
    pub window: usize,
    /// Sees every piece's predictions before they are encoded (the portal's tallies).
    pub observer: Option<Arc<dyn Observer>>,
    /// Captures a sample of the pieces with their answers (`--capture-uri`).
    pub capture: Option<Arc<crate::monitor::Tap>>,
}

/// Watches predictions go by, from the encoding threads, in no particular order.
pub trait Observer: Send + Sync {
    fn predictions(&self, p: &Predictions);
}

/// Whether an input of this format can be cut into records at line ends: line-oriented
/// formats only. CSV is taken to have no quoted newlines, as Batch Transform requires.
pub fn streamable(format: InputFormat) -> bool {
    matches!(
        format,
        InputFormat::JsonLines | InputFormat::Csv { header: false }
    )
}

/// Pieces in flight for a model with `sessions` sessions: one being scored on each session,
/// and two more being parsed, encoded or written, so that no session waits for its next piece.
/// More bought no speed and cost memory (bench/README.md). At most 16: a large machine
/// scores several inputs at once (Batch Transform's MaxConcurrentTransforms is the session
/// count), and each input's pieces count against the body memory budget.
pub fn window(sessions: usize) -> usize {
    sessions.clamp(1, 14) + 2
}

/// Time spent in each stage, summed over the pieces.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stages {
    pub decode: Duration,
    pub queue: Duration,
    pub inference: Duration,
    pub encode: Duration,
}

impl Stages {
    fn add(&mut self, o: &Stages) {
        self.decode += o.decode;
        self.queue += o.queue;
        self.inference += o.inference;
        self.encode += o.encode;
    }
}

/// What an input gave.
#[derive(Debug)]
pub struct Done {
    /// Records answered (placeholders included).
    pub rows: u64,
    pub stages: Stages,
}

/// Why an input failed. `E` is the source's own error (an HTTP body that stalled or passed
/// its limit, a file that cannot be read), passed through untouched.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    #[error("{0}")]
    Source(E),
    /// A bad record, placed in the whole input.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Record(#[from] RecordTooLong),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Writing the answer failed.
    #[error("{0}")]
    Sink(String),
    /// A task failed or panicked, or the model's outputs do not fit its signature.
    #[error("{0}")]
    Failed(String),
}

/// One piece of whole records.
struct Piece {
    index: usize,
    bytes: Bytes,
    /// `\n` bytes of the input before this piece, to number the lines of syntax errors.
    lines_before: u64,
}

/// A piece's answer: encoded already, or (when it has bad records, whose placeholders name
/// rows of the whole input) left to encode in order.
enum Answered {
    Encoded(Vec<u8>),
    Pending {
        outputs: Option<Outputs>,
        bad: Vec<(usize, String)>,
    },
}

struct Scored {
    answer: Answered,
    rows: usize,
    input: usize,
    stages: Stages,
}

enum PieceError {
    Decode(DecodeError, u64),
    Engine(EngineError),
    Failed(String),
}

/// A piece's task, aborted when dropped: dropping the scorer's future cancels its pieces.
struct Running(tokio::task::JoinHandle<Result<Scored, PieceError>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Scores `source` into `sink`. `hold` is told, after each read, how many bytes of input and
/// answer the scorer holds in memory, and may refuse (a shared memory budget).
pub async fn score<S: Source, K: Sink>(
    job: Job,
    source: &mut S,
    sink: &mut K,
    mut hold: impl FnMut(usize) -> Result<(), S::Error>,
) -> Result<Done, StreamError<S::Error>> {
    let job = Arc::new(job);
    let mut cutter = Cutter::new(job.format, job.split, job.chunk_bytes, job.max_record);
    let mut running: VecDeque<(Running, usize)> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut order = InOrder::new(job.accept);
    let mut eof = false;
    // Why reading stopped before the end (a record too long, the source's own error): the
    // pieces before it are still answered first, so that errors come in input order whatever
    // the piece size.
    let mut stopped: Option<StreamError<S::Error>> = None;
    loop {
        while stopped.is_none() && running.len() < job.window.max(1) {
            match cutter.next_piece(eof) {
                Ok(Some(piece)) if eof && piece.index == 0 => {
                    // The whole input is one piece (a small body in placeholder mode): scored
                    // in place, where a small one may run on the HTTP thread as any request.
                    let done = score_piece(Arc::clone(&job), piece, true).await;
                    order.take(&job, Ok(done), sink).await?;
                    continue;
                }
                Ok(Some(piece)) => {
                    let len = piece.bytes.len();
                    in_flight += len;
                    let task = tokio::spawn(score_piece(Arc::clone(&job), piece, false));
                    running.push_back((Running(task), len));
                    continue;
                }
                Ok(None) => {}
                Err(e) => stopped = Some(e.into()),
            }
            if eof || stopped.is_some() {
                break;
            }
            match source.fill(cutter.buf_mut(), job.chunk_bytes).await {
                Ok(read) => eof = read == 0,
                Err(e) => stopped = Some(StreamError::Source(e)),
            }
            if let Err(e) = hold(cutter.held() + in_flight + sink.held()) {
                stopped = stopped.or(Some(StreamError::Source(e)));
            }
        }
        let Some((mut next, len)) = running.pop_front() else {
            break;
        };
        let done = (&mut next.0).await;
        in_flight -= len;
        order.take(&job, done, sink).await?;
    }
    if let Some(e) = stopped {
        return Err(e);
    }
    order.finish(sink).await
}

/// Parses, scores and encodes one piece. `in_place`: awaited by the scorer itself rather than
/// spawned, so the engine may run it inline on an HTTP thread.
async fn score_piece(job: Arc<Job>, piece: Piece, in_place: bool) -> Result<Scored, PieceError> {
    if piece.index == 1 {
        injected_panic("scorer");
    }
    let mut stages = Stages::default();
    let (input, lines_before) = (piece.bytes.len(), piece.lines_before);
    // Decided before anything is copied; a captured piece's bytes are shared, not copied.
    let captured = (job.capture.as_ref())
        .filter(|t| t.capture.sample())
        .map(|_| piece.bytes.clone());
    let t = Instant::now();
    let j = Arc::clone(&job);
    let rows = workers::run(move || {
        let rows =
            match j.split {
                Split::Line => {
                    records::decode(j.format, &piece.bytes, &j.model.signature, j.placeholders)
                }
                Split::Whole => crate::codec::decode(j.format, &piece.bytes, &j.model.signature)
                    .map(|f| records::Rows {
                        total: f.rows,
                        frame: Some(f),
                        bad: Vec::new(),
                    }),
            };
        if let (Some(m), Ok(records::Rows { frame: Some(f), .. })) = (&j.model.monitor, &rows) {
            m.frame(f);
        }
        rows
    })
    .await
    .map_err(PieceError::Failed)?
    .map_err(|e| PieceError::Decode(e, lines_before))?;
    stages.decode = t.elapsed();
    let outputs = match rows.frame {
        Some(frame) => {
            let scored = if in_place {
                job.model.score(&job.ticket, frame, job.deadline).await
            } else {
                // A spawned task is outside the HTTP thread's turn: never inline.
                job.model
                    .score_on_workers(&job.ticket, frame, job.deadline)
                    .await
            }
            .map_err(PieceError::Engine)?;
            stages.queue = scored.queued;
            stages.inference = scored.inference;
            Some(scored.outputs)
        }
        None => None,
    };
    let answer = if rows.bad.is_empty() {
        let t = Instant::now();
        let j = Arc::clone(&job);
        let bytes = workers::run(move || encode(&j, outputs, &[], rows.total, 0))
            .await
            .map_err(PieceError::Failed)?
            .map_err(PieceError::Failed)?;
        stages.encode = t.elapsed();
        if let (Some(tap), Some(input)) = (&job.capture, captured) {
            tap.record(input, bytes::Bytes::copy_from_slice(&bytes));
        }
        Answered::Encoded(bytes)
    } else {
        Answered::Pending {
            outputs,
            bad: rows.bad,
        }
    };
    Ok(Scored {
        answer,
        rows: rows.total,
        input,
        stages,
    })
}

/// A piece's answer lines, joined by the format's separator, without the body's framing.
fn encode(
    job: &Job,
    outputs: Option<Outputs>,
    bad: &[(usize, String)],
    total: usize,
    first_row: usize,
) -> Result<Vec<u8>, String> {
    let predictions = outputs
        .map(|o| job.model.plan.apply(o))
        .transpose()
        .map_err(|m| format!("the model's outputs do not fit its signature: {m}"))?;
    if let (Some(o), Some(p)) = (&job.observer, &predictions) {
        o.predictions(p);
    }
    if let (Some(m), Some(p)) = (&job.model.monitor, &predictions) {
        m.predictions(p);
    }
    let mut w = Writer::fragment(job.accept, total);
    w.append_records(predictions.as_ref(), bad, total, first_row)?;
    Ok(w.take())
}

/// Runs `f` on the blocking pool (file I/O, and parsing when no thread of `workers` could be
/// started); a panic there becomes its message.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(join_failure)
}

fn join_failure(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => format!(
            "panicked: {}",
            crate::error::panic_message(payload.as_ref())
        ),
        Err(_) => "was cancelled".into(),
    }
}

/// Answers written in input order, with the body's framing, and the rows so far.
struct InOrder {
    accept: OutputFormat,
    rows: u64,
    /// A record's answer is written (after the body's opening): the next needs a separator.
    entries: bool,
    stages: Stages,
}

impl InOrder {
    fn new(accept: OutputFormat) -> Self {
        Self {
            accept,
            rows: 0,
            entries: false,
            stages: Stages::default(),
        }
    }

    async fn take<E, K: Sink>(
        &mut self,
        job: &Arc<Job>,
        done: Result<Result<Scored, PieceError>, tokio::task::JoinError>,
        sink: &mut K,
    ) -> Result<(), StreamError<E>> {
        let first_row = self.rows as usize;
        let scored = match done {
            Ok(Ok(scored)) => scored,
            Ok(Err(PieceError::Decode(e, lines))) => {
                return Err(match job.split {
                    Split::Line => e.located(first_row, lines as usize),
                    Split::Whole => e,
                }
                .into())
            }
            Ok(Err(PieceError::Engine(e))) => return Err(e.into()),
            Ok(Err(PieceError::Failed(m))) => {
                return Err(StreamError::Failed(format!(
                    "the task of the chunk starting at row {} {m}",
                    first_row + 1
                )))
            }
            Err(e) => {
                return Err(StreamError::Failed(format!(
                    "scoring the chunk starting at row {} {}",
                    first_row + 1,
                    join_failure(e)
                )))
            }
        };
        let bytes = match scored.answer {
            Answered::Encoded(bytes) => bytes,
            Answered::Pending { outputs, bad } => {
                let (j, total) = (Arc::clone(job), scored.rows);
                workers::run(move || encode(&j, outputs, &bad, total, first_row))
                    .await
                    .map_err(StreamError::Failed)?
                    .map_err(StreamError::Failed)?
            }
        };
        self.stages.add(&scored.stages);
        self.write(bytes, scored.rows, scored.input, sink).await
    }

    /// Writes a piece's answer of `rows` records (`input` bytes in) after the body's framing.
    async fn write<E, K: Sink>(
        &mut self,
        bytes: Vec<u8>,
        rows: usize,
        input: usize,
        sink: &mut K,
    ) -> Result<(), StreamError<E>> {
        // Records, not bytes, decide the framing: one record's answer line may be empty.
        if rows > 0 {
            let lead: &'static [u8] = match (self.entries, self.accept) {
                (false, format) => opening(format),
                (true, OutputFormat::Json) => b",",
                (true, OutputFormat::Csv | OutputFormat::JsonLines) => b"\n",
            };
            self.entries = true;
            sink.write(lead, bytes).await.map_err(StreamError::Sink)?;
        }
        self.rows += rows as u64;
        sink.progress(input, rows);
        Ok(())
    }

    async fn finish<E, K: Sink>(self, sink: &mut K) -> Result<Done, StreamError<E>> {
        if self.rows == 0 {
            return Err(DecodeError::Empty.into());
        }
        let close = closing(self.accept);
        if !close.is_empty() {
            sink.write(close, Vec::new())
                .await
                .map_err(StreamError::Sink)?;
        }
        Ok(Done {
            rows: self.rows,
            stages: self.stages,
        })
    }
}

/// A panic on demand, for tests of the failure paths: `MLAPP_TEST_PANIC=reader|scorer|writer`
/// panics at the second piece only, so that with one piece lost the others keep running.
/// Debug builds only; release builds have no such hook.
#[cfg(debug_assertions)]
fn injected_panic(stage: &str) {
    if std::env::var("MLAPP_TEST_PANIC").is_ok_and(|v| v == stage) {
        panic!("injected by MLAPP_TEST_PANIC={stage}");
    }
}

#[cfg(not(debug_assertions))]
fn injected_panic(_: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    async fn assemble(accept: OutputFormat, pieces: &[(&str, usize)]) -> String {
        let mut order = InOrder::new(accept);
        let mut spool = Spool::default();
        for (bytes, rows) in pieces {
            order
                .write::<String, _>(bytes.as_bytes().to_vec(), *rows, 0, &mut spool)
                .await
                .unwrap();
        }
        match order.finish::<String, _>(&mut spool).await {
            Ok(_) => {}
            Err(e) => return format!("error: {e}"),
        }
        match spool.finish().await.unwrap() {
            Answer::Memory(bytes) => String::from_utf8(bytes).unwrap(),
            Answer::Spool(_) => unreachable!("small answers stay in memory"),
        }
    }

    /// Pieces join into the body the whole input gets: framing once, a separator between
    /// records' answers (an empty answer line included), nothing for pieces of no records.
    #[test]
    fn pieces_join_into_the_whole_body() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let csv = OutputFormat::Csv;
            assert_eq!(
                assemble(csv, &[("", 0), ("a\nb", 2), ("", 0), ("c", 1)]).await,
                "a\nb\nc"
            );
            // One record whose answer line is empty (a string label ""): still a line.
            assert_eq!(
                assemble(csv, &[("a", 1), ("", 1), ("c", 1)]).await,
                "a\n\nc"
            );
            assert_eq!(assemble(csv, &[("a", 1), ("", 1)]).await, "a\n");
            let json = OutputFormat::Json;
            assert_eq!(
                assemble(json, &[("", 0), ("{}", 1), ("{},{}", 2)]).await,
                "{\"predictions\":[{},{},{}]}"
            );
            assert!(assemble(json, &[("", 0)]).await.starts_with("error: "));
        });
    }
}
