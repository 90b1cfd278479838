//! `mlapp transform`: Batch Transform's semantics on local files, without HTTP.
//!
//! Every input file `x` gives `x.out` in the output folder (sub-folders kept), with one answer
//! line per input record, in order. Each file goes through the streaming scorer (`stream`):
//! pieces of whole lines are parsed, scored and encoded in parallel while the next are read,
//! and written in order, so memory holds a few pieces whatever the file's size. An output is written
//! under `x.out.partial` and renamed when complete: a finished output is skipped when the job
//! runs again, and an interrupted one is redone. A file with a bad record fails alone (no
//! `.out`, as in SageMaker), unless bad records get placeholders.

mod ids;
pub use ids::{check_columns, split_fields};
pub mod places;
mod progress;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::batch::BadRecords;
use crate::codec::DecodeError;
use crate::codec::{media, InputFormat, OutputFormat};
use crate::config::ModelArgs;
use crate::engine::{self, runtime, LoadOptions, LoadedModel};
use crate::model::fetch::Fetcher;
use crate::monitor::Metrics;
use crate::storage::{S3Store, StorageError};
use crate::stream::{self, FileSink, FileSource, Split, StreamError};
pub use places::{Item, Place};
use progress::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitType {
    /// One record per line; files are read and scored in chunks of lines.
    Line,
    /// Each file is one request body (any format), read whole.
    None,
}

#[derive(Args, Clone, Debug)]
pub struct TransformConfig {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A file or a folder (sub-folders included), or s3://bucket/key or s3://bucket/prefix/.
    #[arg(long)]
    pub input: String,
    /// The output folder or s3://bucket/prefix/: input `x.csv` gives `x.csv.out`.
    #[arg(long)]
    pub output: String,
    /// Local folder where S3 inputs and outputs are staged, one file at a time.
    /// Default: <temp dir>/mlapp-transform.
    #[arg(long, env = "MLAPP_TRANSFORM_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
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
    /// Where sessions run: auto, cpu or cuda (as for `serve`).
    #[arg(long, env = "MLAPP_DEVICE", value_enum, default_value = "auto")]
    pub device: crate::engine::Device,
    /// Size of the pieces files are read and scored in, in MiB (see bench/README.md).
    #[arg(long, default_value_t = 1.0)]
    pub chunk_mb: f64,
    /// Path of libonnxruntime.so.1.31.1.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// 0-based CSV columns passed through in front of each answer line and not given to the
    /// model (e.g. a device id), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub id_columns: Vec<usize>,
    /// This run's share of the files, for Kubernetes Indexed Jobs or array jobs: file `i`
    /// (in listing order) is this run's when `i % shard_count == shard_index`.
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub shard_index: usize,
    /// How many runs share the files (see --shard-index).
    #[arg(long, default_value_t = 1)]
    pub shard_count: usize,

    #[command(flatten)]
    pub monitor: crate::monitor::setup::MonitorArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("{0}")]
    Monitor(#[from] crate::monitor::setup::SetupError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot load the model: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Storage(#[from] StorageError),
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
    /// Inputs that failed, with why.
    pub failed: Vec<(String, String)>,
    pub rows: u64,
}

/// What every file of a run shares.
pub struct FileJob {
    pub model: Arc<LoadedModel>,
    pub format: InputFormat,
    pub accept: OutputFormat,
    pub split: SplitType,
    pub placeholders: bool,
    pub chunk_bytes: usize,
    /// CSV columns passed through in front of each answer line (`ids`).
    pub id_columns: Vec<usize>,
    /// Sees the predictions (the portal's tallies).
    pub observer: Option<Arc<dyn stream::Observer>>,
    /// Captures a sample of the pieces (`--capture-uri`).
    pub capture: Option<Arc<crate::monitor::Tap>>,
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
        None => media::line_answer(format).unwrap_or(OutputFormat::JsonLines),
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
    // A chunk is held a few times over in memory: past 1 GiB it is a typo, not a setting.
    crate::config::in_range("--chunk-mb", cfg.chunk_mb, 0.001, 1024.0)
        .map_err(TransformError::Config)?;
    if let Some(w) = cfg.workers.filter(|w| !(1..=4096).contains(w)) {
        return Err(TransformError::Config(format!(
            "--workers must be between 1 and 4096, got {w}"
        )));
    }
    if cfg.shard_count == 0 || cfg.shard_index >= cfg.shard_count {
        return Err(TransformError::Config(format!(
            "--shard-index must be below --shard-count, got {} of {}",
            cfg.shard_index, cfg.shard_count
        )));
    }
    check_columns(&cfg.id_columns, format, cfg.split_type, accept)
        .map_err(|e| TransformError::Config(format!("--id-columns: {e}")))?;
    let (input, output) = (Place::parse(&cfg.input)?, Place::parse(&cfg.output)?);
    let sources = cfg.model.source_options();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TransformError::Config(format!("cannot start a runtime: {e}")))?;
    // Kept to the end: its claim keeps a `serve` sharing the cache from pruning the model.
    let fetcher = Fetcher::new(&cfg.model.uri(), sources.clone())?;
    let fetched = rt.block_on(fetcher.fetch())?;
    let store = if input.is_s3() || output.is_s3() {
        Some(rt.block_on(S3Store::connect(&sources.s3)))
    } else {
        None
    };
    let items: Vec<Item> = rt
        .block_on(places::plan(store.as_ref(), &input, &output))?
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % cfg.shard_count == cfg.shard_index)
        .map(|(_, item)| item)
        .collect();
    if cfg.shard_count > 1 {
        log::info!(
            "shard {} of {}: {} files",
            cfg.shard_index,
            cfg.shard_count,
            items.len()
        );
    }
    let (env, _) = runtime::init(cfg.ort_dylib.as_deref())?;
    let opts = LoadOptions {
        sessions,
        cuda_sessions: engine::session::cuda_sessions(cfg.workers, engine::session::visible_gpus()),
        intra_threads: 1,
        queue_capacity: 4 * sessions + 4,
        warmup_runs: 1,
        warmup_rows: 8,
        config_name: cfg.model.model_config.clone(),
        max_batch_rows: 256,
        max_batch_delay: Duration::ZERO,
        // Scoring threads, not an event loop: nothing to keep free.
        inline_budget: Duration::ZERO,
        device: cfg.device,
        background: false,
    };
    let mut loaded = engine::load(env, &fetched.dir, &opts, Arc::new(Metrics::new()))?;
    loaded.monitor = cfg.monitor.attach(&loaded, &rt, &sources.s3)?;
    let model = Arc::new(loaded);
    let capture = cfg
        .monitor
        .capture(&model.name, &sources.s3)?
        .map(|capture| {
            Arc::new(crate::monitor::Tap {
                capture,
                input_type: Arc::from(cfg.content_type.as_str()),
                output_type: Arc::from(accept.mime()),
                inference_id: None,
            })
        });
    let job = FileJob {
        model: Arc::clone(&model),
        format,
        accept,
        split: cfg.split_type,
        placeholders: cfg.bad_records == BadRecords::Placeholder,
        chunk_bytes: (cfg.chunk_mb * 1024.0 * 1024.0) as usize,
        id_columns: cfg.id_columns.clone(),
        observer: None,
        capture: capture.clone(),
    };
    let work = Staging {
        dir: cfg
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("mlapp-transform")),
        store: store.as_ref(),
        rt: &rt,
        writers: false,
    };
    let tag = std::process::id().to_string();
    let mut progress = Progress::new(items.iter().map(|i| i.size).sum());
    let mut summary = Summary::default();
    for (n, item) in items.iter().enumerate() {
        match rt.block_on(places::exists(store.as_ref(), &item.output)) {
            Ok(true) => {
                log::info!("{}: done already ({}), skipped", item.input, item.output);
                summary.skipped += 1;
                progress.skip(item.size);
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                log::error!("{}: failed: {e}", item.input);
                summary.failed.push((item.input.to_string(), e.to_string()));
                continue;
            }
        }
        let mut advance = |bytes, rows| progress.advance(bytes, rows);
        match work.transform(&job, &format!("{tag}-{n}"), item, &mut advance, None, None) {
            Ok(rows) => {
                summary.done += 1;
                summary.rows += rows;
            }
            Err(why) => {
                log::error!("{}: failed, no output written: {why}", item.input);
                summary.failed.push((item.input.to_string(), why));
            }
        }
    }
    progress.finish();
    model.engine.shutdown();
    fetcher.release();
    // The run's last rows make a window of their own, checked and logged like the others.
    if let Some(m) = &model.monitor {
        m.close_now();
    }
    if let Some(tap) = &capture {
        if !tap.capture.flush(Duration::from_secs(120)) {
            log::warn!("capture: not every record was written within 120 s of the end");
        }
    }
    Ok(summary)
}

/// Moves S3 inputs and outputs through a local folder, one file at a time: an S3 output
/// appears only when its upload completes, so it too is never seen half written.
pub struct Staging<'a> {
    pub dir: PathBuf,
    pub store: Option<&'a S3Store>,
    pub rt: &'a tokio::runtime::Runtime,
    /// Name each writer's partial output apart (`x.out.<tag>.partial`): several replicas may
    /// write one output. A lone `mlapp transform` writes `x.out.partial`, which its next run
    /// overwrites rather than leaves behind.
    pub writers: bool,
}

/// Told `(input bytes, records)` as pieces are answered.
pub type OnPiece<'a> = &'a mut dyn FnMut(u64, u64);

/// Asked just before a finished output is made visible; an error leaves it unwritten (the
/// portal checks that its lease still holds).
pub type Commit<'a> = &'a dyn Fn() -> Result<(), String>;

impl Staging<'_> {
    /// Scores one input into its output; the records it answered, or why it failed. `tag`
    /// names this writer's temporary files: two writers of the same output (a replica that
    /// lost its lease and the one that took it over) never share one, and the output appears
    /// whole, by a rename or a completed upload. `stop` turning true abandons the input.
    pub fn transform(
        &self,
        job: &FileJob,
        tag: &str,
        item: &Item,
        progress: OnPiece<'_>,
        stop: Option<tokio::sync::watch::Receiver<bool>>,
        commit: Option<Commit<'_>>,
    ) -> Result<u64, String> {
        let staged = |what: &str| self.dir.join(format!("{tag}.{what}"));
        let store = || self.store.ok_or_else(|| "no S3 client".to_string());
        let input = match &item.input {
            Place::Local(p) => p.clone(),
            Place::S3(uri) => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| format!("{}: {e}", self.dir.display()))?;
                let at = staged("in");
                self.rt
                    .block_on(store()?.download(uri, &at))
                    .map_err(|e| e.to_string())?;
                at
            }
        };
        let output = match &item.output {
            Place::Local(p) => p.clone(),
            Place::S3(_) => staged("out"),
        };
        // A staged S3 output is completed by its upload, a local one by its rename.
        let local_commit = if item.output.is_s3() { None } else { commit };
        let partial = PathBuf::from(if self.writers {
            format!("{}.{tag}.partial", output.display())
        } else {
            format!("{}.partial", output.display())
        });
        let mut result = transform_file(
            self.rt,
            job,
            &input,
            (&output, &partial),
            progress,
            stop,
            local_commit,
        );
        if let (Ok(_), Place::S3(uri)) = (&result, &item.output) {
            if let Some(Err(why)) = commit.map(|c| c()) {
                result = Err(why);
            } else if let Err(e) = self.rt.block_on(store()?.upload(&output, uri)) {
                result = Err(e.to_string());
            }
            let _ = std::fs::remove_file(&output);
        }
        if item.input.is_s3() {
            let _ = std::fs::remove_file(&input);
        }
        result
    }
}

/// Transforms one file into `output` (via `output.partial`); the records it scored, or why
/// it failed.
#[allow(clippy::too_many_arguments)]
fn transform_file(
    rt: &tokio::runtime::Runtime,
    job: &FileJob,
    input: &Path,
    (output, partial): (&Path, &Path),
    progress: OnPiece<'_>,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    commit: Option<Commit<'_>>,
) -> Result<u64, String> {
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = File::open(input).map_err(|e| e.to_string())?;
    let out = File::create(partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut stop = stop;
            tokio::select! {
                r = score_file(job, file, out, progress) => r,
                () = stopped(stop.as_mut()) => Err("stopped before the file was done".to_string()),
            }
        })
    }))
    .unwrap_or_else(|p| {
        Err(format!(
            "scoring the file panicked: {}",
            crate::error::panic_message(p.as_ref())
        ))
    });
    let result = match (result, commit) {
        (Ok(rows), Some(commit)) => commit().map(|()| rows),
        (result, _) => result,
    };
    match result {
        Ok(rows) => {
            std::fs::rename(partial, output).map_err(|e| format!("{}: {e}", output.display()))?;
            Ok(rows)
        }
        Err(why) => {
            let _ = std::fs::remove_file(partial);
            Err(why)
        }
    }
}

/// Resolves when `stop` turns true (never without one).
async fn stopped(stop: Option<&mut tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            if rx.wait_for(|&s| s).await.is_err() {
                // The sender went: nobody can ask to stop any more.
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

async fn score_file(
    job: &FileJob,
    input: File,
    output: File,
    progress: OnPiece<'_>,
) -> Result<u64, String> {
    let ticket = job.model.engine.admit().map_err(|e| e.to_string())?;
    let piece = stream::Job {
        model: Arc::clone(&job.model),
        ticket: Arc::new(ticket),
        format: job.format,
        accept: job.accept,
        split: match job.split {
            SplitType::Line => Split::Line,
            SplitType::None => Split::Whole,
        },
        placeholders: job.placeholders,
        // Offline: no request deadline; thirty days bound a run that never ends.
        deadline: std::time::Instant::now() + Duration::from_secs(30 * 86_400),
        chunk_bytes: job.chunk_bytes,
        max_record: stream::MAX_RECORD_BYTES,
        window: stream::window(job.model.sessions),
        observer: job.observer.clone(),
        capture: job.capture.clone(),
    };
    let mut source = FileSource::new(input);
    let mut sink = FileSink::new(output, |bytes, rows| progress(bytes as u64, rows as u64));
    let scored = if job.id_columns.is_empty() {
        stream::score(piece, &mut source, &mut sink, |_| Ok(())).await
    } else {
        ids::score(piece, &job.id_columns, &mut source, &mut sink).await
    };
    let rows = match scored {
        Ok(done) => done.rows,
        // A file of no records answers with no lines (an empty `.out`), as SageMaker does.
        Err(StreamError::Decode(DecodeError::Empty)) if job.split == SplitType::Line => 0,
        Err(e) => return Err(e.to_string()),
    };
    sink.finish().await?;
    Ok(rows)
}
