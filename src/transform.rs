//! `mlapp transform`: Batch Transform's semantics on local files, without HTTP.
//!
//! Every input file `x` gives `x.out` in the output folder (sub-folders kept), with one answer
//! line per input record, in order. A file is read in chunks of whole lines; chunks are
//! parsed, scored and encoded on one thread per session while the next are read, and written
//! in order, so memory holds a few chunks whatever the file's size. An output is written
//! under `x.out.partial` and renamed when complete: a finished output is skipped when the job
//! runs again, and an interrupted one is redone. A file with a bad record fails alone (no
//! `.out`, as in SageMaker), unless bad records get placeholders.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::batch::BadRecords;
use crate::codec::encode::Writer;
use crate::codec::{media, records, InputFormat, OutputFormat};
use crate::engine::{self, runtime, LoadOptions, LoadedModel};
use crate::monitor::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitType {
    /// One record per line; files are read and scored in chunks of lines.
    Line,
    /// Each file is one request body (any format), read whole.
    None,
}

#[derive(Args, Clone, Debug)]
pub struct TransformConfig {
    /// The model folder.
    #[arg(long, env = "MLAPP_MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,
    /// Name of the optional model config file inside the model folder.
    #[arg(long, env = "MLAPP_MODEL_CONFIG", default_value = "mlapp.json")]
    pub model_config: String,
    /// A file, or a folder whose files (sub-folders included) are all transformed.
    #[arg(long)]
    pub input: PathBuf,
    /// The output folder: input `x.csv` gives `x.csv.out`.
    #[arg(long)]
    pub output: PathBuf,
    /// The input files' type, as a Content-Type.
    #[arg(long, default_value = "text/csv")]
    pub content_type: String,
    /// The answers' type, as an Accept (default: CSV for CSV input, JSON Lines otherwise).
    #[arg(long)]
    pub accept: Option<String>,
    /// How files are split into records.
    #[arg(long, value_enum, default_value = "line")]
    pub split_type: SplitType,
    /// What a bad record does: fail its file, or get a placeholder line.
    #[arg(long, env = "MLAPP_BAD_RECORDS", value_enum, default_value = "fail")]
    pub bad_records: BadRecords,
    /// Inference sessions, one scoring thread each. Default: the CPUs available.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_WORKERS")]
    pub workers: Option<usize>,
    /// Size of the chunks files are read in, in MiB.
    #[arg(long, default_value_t = 2.0)]
    pub chunk_mb: f64,
    /// Path of libonnxruntime.so.1.31.1.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot load the model: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub done: usize,
    pub skipped: usize,
    /// Files that failed, with why.
    pub failed: Vec<(PathBuf, String)>,
    pub rows: u64,
}

struct Job<'a> {
    model: &'a LoadedModel,
    format: InputFormat,
    accept: OutputFormat,
    split: SplitType,
    placeholders: bool,
    chunk_bytes: usize,
    workers: usize,
}

pub fn run(cfg: &TransformConfig) -> Result<Summary, TransformError> {
    let sessions = cfg
        .workers
        .unwrap_or_else(crate::config::ServeConfig::cpus)
        .max(1);
    let format = media::input_format(Some(&cfg.content_type), "text/csv", false, b"")
        .map_err(|e| TransformError::Config(format!("--content-type: {e}")))?;
    let accept = match &cfg.accept {
        Some(a) => media::parse_output(a)
            .ok_or_else(|| TransformError::Config(format!("--accept: unsupported type {a:?}")))?,
        None if matches!(format, InputFormat::Csv { .. }) => OutputFormat::Csv,
        None => OutputFormat::JsonLines,
    };
    if cfg.split_type == SplitType::Line {
        if !matches!(
            format,
            InputFormat::Csv { header: false } | InputFormat::JsonLines
        ) {
            return Err(TransformError::Config(
                "--split-type line takes CSV without a header or JSON Lines input".into(),
            ));
        }
        if accept == OutputFormat::Json {
            return Err(TransformError::Config(
                "--split-type line answers one line per record: use --accept text/csv or application/jsonlines".into(),
            ));
        }
    }
    if !(cfg.chunk_mb.is_finite() && cfg.chunk_mb > 0.0) {
        return Err(TransformError::Config("--chunk-mb must be > 0".into()));
    }
    let files = list_inputs(&cfg.input)?;
    let (env, _) = runtime::init(cfg.ort_dylib.as_deref())?;
    let opts = LoadOptions {
        sessions,
        intra_threads: 1,
        queue_capacity: 4 * sessions + 4,
        warmup_runs: 1,
        warmup_rows: 8,
        config_name: cfg.model_config.clone(),
        max_batch_rows: 256,
        max_batch_delay: Duration::ZERO,
    };
    let model = engine::load(env, &cfg.model_dir, &opts, Arc::new(Metrics::new()))?;
    let job = Job {
        model: &model,
        format,
        accept,
        split: cfg.split_type,
        placeholders: cfg.bad_records == BadRecords::Placeholder,
        chunk_bytes: (cfg.chunk_mb * 1024.0 * 1024.0) as usize,
        workers: sessions,
    };
    let total_bytes = files.iter().map(|(_, len)| len).sum();
    let mut progress = Progress::new(total_bytes);
    let mut summary = Summary::default();
    for (rel, len) in &files {
        let input = if rel.as_os_str().is_empty() {
            cfg.input.clone()
        } else {
            cfg.input.join(rel)
        };
        let name = input.file_name().unwrap_or_default().to_string_lossy();
        let out_rel = if rel.as_os_str().is_empty() {
            PathBuf::from(format!("{name}.out"))
        } else {
            rel.with_file_name(format!("{name}.out"))
        };
        let output = cfg.output.join(out_rel);
        if output.exists() {
            log::info!(
                "{}: done already ({}), skipped",
                input.display(),
                output.display()
            );
            summary.skipped += 1;
            progress.skip(*len);
            continue;
        }
        match transform_file(&job, &input, &output, &mut progress) {
            Ok(rows) => {
                summary.done += 1;
                summary.rows += rows;
            }
            Err(why) => {
                log::error!("{}: failed, no output written: {why}", input.display());
                summary.failed.push((input, why));
            }
        }
    }
    progress.finish();
    model.engine.shutdown();
    Ok(summary)
}

/// Input files with their sizes, as paths relative to `input` (empty when it is a file).
fn list_inputs(input: &Path) -> Result<Vec<(PathBuf, u64)>, TransformError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TransformError::Io { path, source }
    };
    let meta = std::fs::metadata(input).map_err(io(input))?;
    if meta.is_file() {
        return Ok(vec![(PathBuf::new(), meta.len())]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![input.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io(&path))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                let rel = path.strip_prefix(input).unwrap_or(&path).to_path_buf();
                files.push((rel, meta.len()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Transforms one file into `output` (via `output.partial`); the records it scored, or why
/// it failed.
fn transform_file(
    job: &Job<'_>,
    input: &Path,
    output: &Path,
    progress: &mut Progress,
) -> Result<u64, String> {
    let partial = PathBuf::from(format!("{}.partial", output.display()));
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = File::open(input).map_err(|e| e.to_string())?;
    let out = File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let result = pipeline(job, BufReader::with_capacity(1 << 20, file), out, progress);
    match result {
        Ok(rows) => {
            std::fs::rename(&partial, output).map_err(|e| format!("{}: {e}", output.display()))?;
            Ok(rows)
        }
        Err(why) => {
            let _ = std::fs::remove_file(&partial);
            Err(why)
        }
    }
}

/// One chunk of a file: its index, its bytes, and the row of its first record in the file.
type Piece = (usize, Vec<u8>, usize);
/// A chunk's answer lines, records and input bytes, or why it failed.
type Answer = Result<(Vec<u8>, usize, usize), String>;

/// Reads chunks on this thread's helper, scores them on `job.workers` threads, and writes
/// the answers in order. At most `window` chunks are between being read and being written.
fn pipeline(
    job: &Job<'_>,
    mut reader: BufReader<File>,
    out: File,
    progress: &mut Progress,
) -> Result<u64, String> {
    let window = 2 * job.workers + 1;
    let (work_tx, work_rx) = sync_channel::<Piece>(job.workers);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = sync_channel::<(usize, Answer)>(window);
    let (credit_tx, credit_rx) = sync_channel::<()>(window);
    for _ in 0..window {
        let _ = credit_tx.send(());
    }
    let abort = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (abort, work_rx) = (&abort, &work_rx);
        let read = scope.spawn(move || read_chunks(job, &mut reader, &work_tx, &credit_rx, abort));
        for _ in 0..job.workers {
            let done_tx = done_tx.clone();
            scope.spawn(move || score_chunks(job, work_rx, &done_tx));
        }
        drop(done_tx);
        let written = write_in_order(out, &done_rx, credit_tx, abort, progress);
        let read = read
            .join()
            .unwrap_or_else(|_| Err("the reading thread panicked".into()));
        let rows = written?;
        read?;
        Ok(rows)
    })
}

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
            return Ok(());
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
        let answer = rt
            .block_on(score_chunk(job, &chunk, first_row))
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
                .engine
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
    done: &Receiver<(usize, Answer)>,
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
struct Progress {
    total: u64,
    done: u64,
    rows: u64,
    started: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
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

    fn skip(&mut self, bytes: u64) {
        self.total = self.total.saturating_sub(bytes).max(1);
    }

    fn advance(&mut self, bytes: u64, rows: u64) {
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

    fn finish(&mut self) {
        self.done = self.total;
        self.show();
        if self.tty {
            eprintln!();
        }
    }
}
