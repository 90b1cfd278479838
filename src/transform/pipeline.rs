//! One file through the pipeline: chunks of whole records are read on one thread, parsed,
//! scored and encoded on one thread per session, and written in order, with at most a
//! window of chunks between reading and writing, so memory holds a few chunks whatever the
//! file's size.
//!
//! A panic on any of these threads fails the file with a message: it is caught where it
//! happens, and each thread owns the channel ends it uses, so a thread that ends drops them
//! and the threads waiting on it stop instead of waiting for ever.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Job, SplitType};
use crate::codec::encode::Writer;
use crate::codec::records;

/// One chunk of a file: its index, its bytes, and the row of its first record in the file.
type Piece = (usize, Vec<u8>, usize);
/// A chunk's answer lines, records and input bytes, or why it failed.
type Answer = Result<(Vec<u8>, usize, usize), String>;

/// Reads chunks on this thread's helper, scores them on `job.workers` threads, and writes
/// the answers in order. At most `window` chunks are between being read and being written.
pub(super) fn pipeline(
    job: &Job<'_>,
    mut reader: BufReader<File>,
    out: File,
    progress: &mut Progress,
) -> Result<u64, String> {
    let window = 2 * job.workers + 1;
    let (work_tx, work_rx) = sync_channel::<Piece>(job.workers);
    // Shared by the scorers and dropped with the last: a reader sending to no one then stops.
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(usize, Answer)>(window);
    let (credit_tx, credit_rx) = sync_channel::<()>(window);
    for _ in 0..window {
        let _ = credit_tx.send(());
    }
    let abort = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let abort = &abort;
        let read = scope.spawn(move || {
            let (work_tx, credit_rx) = (work_tx, credit_rx);
            catch_unwind(AssertUnwindSafe(|| {
                read_chunks(job, &mut reader, &work_tx, &credit_rx, abort)
            }))
            .unwrap_or_else(|p| {
                abort.store(true, Ordering::Relaxed);
                Err(panicked("the reading thread", p))
            })
        });
        for _ in 0..job.workers {
            let done_tx = done_tx.clone();
            let work_rx = Arc::clone(&work_rx);
            scope.spawn(move || score_chunks(job, &work_rx, &done_tx));
        }
        drop((done_tx, work_rx));
        // On this thread: a panic here drops `done_rx` and the credits with the closure's
        // frame, which stops the scorers and the reader.
        let written = catch_unwind(AssertUnwindSafe(move || {
            write_in_order(out, done_rx, credit_tx, abort, progress)
        }))
        .unwrap_or_else(|p| {
            abort.store(true, Ordering::Relaxed);
            Err(panicked("the writing thread", p))
        });
        let read = read
            .join()
            .unwrap_or_else(|_| Err("the reading thread panicked".into()));
        let rows = written?;
        read?;
        Ok(rows)
    })
}

/// The message of a caught panic, for the file's error.
fn panicked(what: &str, payload: Box<dyn std::any::Any + Send>) -> String {
    format!(
        "{what} panicked: {}",
        crate::error::panic_message(payload.as_ref())
    )
}

/// A panic on demand, for tests of the paths above: `MLAPP_TEST_PANIC=reader|scorer|writer`
/// panics at the second chunk only, so that with one scorer lost the others keep running (the
/// case that hung). Debug builds only; release builds have no such hook.
#[cfg(debug_assertions)]
fn injected_panic(stage: &str) {
    if std::env::var("MLAPP_TEST_PANIC").is_ok_and(|v| v == stage) {
        panic!("injected by MLAPP_TEST_PANIC={stage}");
    }
}

#[cfg(not(debug_assertions))]
fn injected_panic(_: &str) {}

fn read_chunks(
    job: &Job<'_>,
    reader: &mut BufReader<File>,
    work: &std::sync::mpsc::SyncSender<Piece>,
    credits: &Receiver<()>,
    abort: &AtomicBool,
) -> Result<(), String> {
    let mut first_row = 0;
    for index in 0.. {
        if abort.load(Ordering::Relaxed) || credits.recv().is_err() {
            return Ok(());
        }
        if index == 1 {
            injected_panic("reader");
        }
        let mut chunk = Vec::with_capacity(job.chunk_bytes + 4096);
        let read = match job.split {
            SplitType::None => reader.read_to_end(&mut chunk),
            SplitType::Line => (&mut *reader)
                .take(job.chunk_bytes as u64)
                .read_to_end(&mut chunk)
                .and_then(|n| {
                    // Finish the last line so the chunk holds whole records.
                    let more = if chunk.last().is_some_and(|&b| b != b'\n') {
                        reader.read_until(b'\n', &mut chunk)?
                    } else {
                        0
                    };
                    Ok(n + more)
                }),
        }
        .map_err(|e| e.to_string())?;
        if read == 0 && index > 0 {
            return Ok(());
        }
        let records = match job.split {
            SplitType::Line => records::count(job.format, &chunk),
            SplitType::None => 0,
        };
        if work.send((index, chunk, first_row)).is_err() {
            // Every scorer is gone: unless the writer stopped the job, chunks went unscored.
            if abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            return Err("the scoring threads stopped before the file was scored".into());
        }
        first_row += records;
        if job.split == SplitType::None || read == 0 {
            return Ok(());
        }
    }
    Ok(())
}

fn score_chunks(
    job: &Job<'_>,
    work: &Mutex<Receiver<Piece>>,
    done: &std::sync::mpsc::SyncSender<(usize, Answer)>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        log::error!("could not start a scoring thread's runtime");
        return;
    };
    loop {
        let next = work
            .lock()
            .map_err(|_| ())
            .and_then(|rx| rx.recv().map_err(|_| ()));
        let Ok((index, chunk, first_row)) = next else {
            return;
        };
        // The chunk's own failure: the writer, waiting for this index, then stops the job.
        let answer = catch_unwind(AssertUnwindSafe(|| {
            if index == 1 {
                injected_panic("scorer");
            }
            rt.block_on(score_chunk(job, &chunk, first_row))
        }))
        .unwrap_or_else(|p| {
            Err(panicked(
                &format!("scoring the chunk starting at row {}", first_row + 1),
                p,
            ))
        })
        .map(|(bytes, records)| (bytes, records, chunk.len()));
        if done.send((index, answer)).is_err() {
            return;
        }
    }
}

/// One chunk's answer lines (no trailing newline) and its record count.
async fn score_chunk(
    job: &Job<'_>,
    chunk: &[u8],
    first_row: usize,
) -> Result<(Vec<u8>, usize), String> {
    let model = job.model;
    let rows = match job.split {
        SplitType::Line => records::decode(job.format, chunk, &model.signature, job.placeholders),
        SplitType::None => {
            crate::codec::decode(job.format, chunk, &model.signature).map(|f| records::Rows {
                total: f.rows,
                frame: Some(f),
                bad: Vec::new(),
            })
        }
    }
    .map_err(|e| {
        let text = e.to_string();
        match e.after_rows(first_row) {
            Some(moved) => moved.to_string(),
            None => format!("in the chunk starting at row {}: {text}", first_row + 1),
        }
    })?;
    let predictions = match rows.frame {
        Some(frame) => {
            let ticket = model.engine.admit().map_err(|e| e.to_string())?;
            // Offline: no request deadline; a day bounds a run that never ends.
            let deadline = Instant::now() + Duration::from_secs(86_400);
            let scored = model
                .score(&ticket, frame, deadline)
                .await
                .map_err(|e| e.to_string())?;
            Some(model.plan.apply(scored.outputs)?)
        }
        None => None,
    };
    let mut w = Writer::new(job.accept, rows.total);
    w.append_records(predictions.as_ref(), &rows.bad, rows.total, first_row)?;
    Ok((w.finish(), rows.total))
}

fn write_in_order(
    out: File,
    done: Receiver<(usize, Answer)>,
    credits: std::sync::mpsc::SyncSender<()>,
    abort: &AtomicBool,
    progress: &mut Progress,
) -> Result<u64, String> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut pending = BTreeMap::new();
    let (mut next, mut rows, mut wrote_any) = (0, 0u64, false);
    let mut failure = None;
    // Dropped on failure: a reader waiting for a credit then stops, instead of waiting for
    // ever while this loop waits for the scorers, which wait for the reader.
    let mut credits = Some(credits);
    for (index, answer) in done.iter() {
        if failure.is_some() {
            continue; // drain, so the other threads can finish
        }
        pending.insert(index, answer);
        if index == 1 {
            injected_panic("writer");
        }
        while let Some(answer) = pending.remove(&next) {
            match answer {
                Ok((bytes, records, input_len)) => {
                    let io = (|| {
                        if wrote_any && !bytes.is_empty() {
                            out.write_all(b"\n")?;
                        }
                        out.write_all(&bytes)
                    })();
                    if let Err(e) = io {
                        failure = Some(e.to_string());
                        break;
                    }
                    wrote_any |= !bytes.is_empty();
                    rows += records as u64;
                    progress.advance(input_len as u64, records as u64);
                    if let Some(credits) = &credits {
                        let _ = credits.send(());
                    }
                }
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            }
            next += 1;
        }
        if failure.is_some() {
            abort.store(true, Ordering::Relaxed);
            credits = None;
        }
    }
    drop(credits);
    if let Some(why) = failure {
        return Err(why);
    }
    out.flush().map_err(|e| e.to_string())?;
    out.get_ref().sync_all().map_err(|e| e.to_string())?;
    Ok(rows)
}

/// Progress on stderr: a line redrawn twice a second on a terminal, a log line every 10 s
/// otherwise.
pub(super) struct Progress {
    total: u64,
    done: u64,
    rows: u64,
    started: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    pub(super) fn new(total: u64) -> Self {
        let now = Instant::now();
        Self {
            total: total.max(1),
            done: 0,
            rows: 0,
            started: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn skip(&mut self, bytes: u64) {
        self.total = self.total.saturating_sub(bytes).max(1);
    }

    pub(super) fn advance(&mut self, bytes: u64, rows: u64) {
        self.done = (self.done + bytes).min(self.total);
        self.rows += rows;
        let every = if self.tty { 500 } else { 10_000 };
        if self.last.elapsed() >= Duration::from_millis(every) {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = self.rows as f64 / secs;
        let frac = self.done as f64 / self.total as f64;
        let eta = if frac > 0.0 {
            secs * (1.0 - frac) / frac
        } else {
            0.0
        };
        let line = format!(
            "{:5.1}%  {} rows  {:.0} rows/s  ETA {:.0} s",
            100.0 * frac,
            self.rows,
            rate,
            eta
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            log::info!("{line}");
        }
    }

    pub(super) fn finish(&mut self) {
        self.done = self.total;
        self.show();
        if self.tty {
            eprintln!();
        }
    }
}
