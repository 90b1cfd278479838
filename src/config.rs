//! Every option of `mlapp serve`, as a flag and an environment variable. SageMaker's
//! environment names are mapped here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::batch::{BadRecords, BatchStrategy, ExecutionParameters};
use crate::model::fetch::SourceOptions;
use crate::storage::{Limits, S3Options};

const MIB: f64 = 1024.0 * 1024.0;
/// The longest duration any option takes; far past any real setting, far below what an
/// `Instant` plus a `Duration` can overflow at.
const DAY_SECS: f64 = 86_400.0;
/// 1 TiB: bodies are bounded by memory or, streamed, by the record cap long before this.
const MAX_PAYLOAD_MB: f64 = 1_048_576.0;
const MAX_THREADS: usize = 4_096;

/// `value` must be a number within `lo..=hi`; the error names the option and the bounds.
pub(crate) fn in_range(name: &str, value: f64, lo: f64, hi: f64) -> Result<(), String> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} must be between {lo} and {hi}, got {value}"))
    }
}

#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub portal: crate::portal::PortalArgs,

    #[command(flatten)]
    pub monitor: crate::monitor::setup::MonitorArgs,

    #[command(flatten)]
    pub registry: crate::registry::RegistryArgs,

    /// Seconds between checks of the model URI for a new version (ETag or content hash);
    /// a new one is loaded beside the old and switched to. 0: reload only on SIGHUP.
    #[arg(long, env = "MLAPP_MODEL_POLL_SECONDS", default_value_t = 0.0)]
    pub model_poll_seconds: f64,

    /// Address to listen on.
    #[arg(long, env = "MLAPP_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Largest request body, in MiB; larger bodies get 413. Default: 6, or in batch mode the
    /// MaxPayloadInMB that /execution-parameters suggests. 0 means the Batch Transform
    /// maximum of 100 MiB.
    #[arg(long, env = "SAGEMAKER_MAX_PAYLOAD_IN_MB")]
    pub max_payload_mb: Option<f64>,

    /// Seconds a request may take, queueing included; later it gets 504. Default: 60, or
    /// 600 in batch mode (Batch Transform's default InvocationsTimeoutInSeconds).
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_TIMEOUT")]
    pub timeout: Option<f64>,

    /// Batch Transform mode: larger bodies and a longer timeout by default. SageMaker sets
    /// SAGEMAKER_BATCH=true (any case) in transform jobs.
    #[arg(
        long,
        env = "SAGEMAKER_BATCH",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub batch: bool,

    /// MaxConcurrentTransforms of the transform job, when it set one.
    #[arg(long, env = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS")]
    pub max_concurrent_transforms: Option<usize>,

    /// What a bad record in a CSV or JSON Lines body does: fail the request, or get a
    /// placeholder answer line while the other records are scored.
    #[arg(long, env = "MLAPP_BAD_RECORDS", value_enum, default_value = "fail")]
    pub bad_records: BadRecords,

    /// BatchStrategy reported by /execution-parameters.
    #[arg(
        long,
        env = "SAGEMAKER_BATCH_STRATEGY",
        value_enum,
        default_value = "MULTI_RECORD"
    )]
    pub batch_strategy: BatchStrategy,

    /// Inference sessions (one worker thread each). Default: the CPUs this process may use.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_WORKERS")]
    pub workers: Option<usize>,

    /// HTTP worker threads. Default: the CPUs this process may use.
    #[arg(long, env = "MLAPP_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Where sessions run: auto (CUDA when this ONNX Runtime has it and it works, else the
    /// CPU, logged), cpu, or cuda (fail when CUDA cannot run the model).
    #[arg(long, env = "MLAPP_DEVICE", value_enum, default_value = "auto")]
    pub device: crate::engine::Device,

    /// ONNX Runtime intra-op threads per session.
    #[arg(long, env = "MLAPP_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Requests that may be in flight (waiting or being scored); beyond that, new ones get
    /// 503 with Retry-After at once instead of queueing without bound.
    #[arg(long, env = "MLAPP_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Most rows one ONNX Runtime run may hold when concurrent requests are coalesced.
    #[arg(long, env = "MLAPP_MAX_BATCH_ROWS", default_value_t = 256)]
    pub max_batch_rows: usize,

    /// Milliseconds an unfilled batch may wait for more requests (0: run at once with
    /// whatever is queued, which adds no latency at low load).
    #[arg(long, env = "MLAPP_MAX_BATCH_DELAY_MS", default_value_t = 0.0)]
    pub max_batch_delay_ms: f64,

    /// Also serve GET /metrics on this port (SageMaker routes only /ping and /invocations
    /// to the main port).
    #[arg(long, env = "MLAPP_METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Answer type when Accept is missing or */*. Default: application/json; in batch mode a
    /// CSV or JSON Lines body is answered in its own format, one line per record.
    #[arg(long, env = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT")]
    pub default_accept: Option<String>,

    /// Request type assumed when Content-Type is missing or application/octet-stream.
    #[arg(
        long,
        env = "MLAPP_DEFAULT_CONTENT_TYPE",
        default_value = "application/json"
    )]
    pub default_content_type: String,

    /// Path of libonnxruntime.so.1.31.1. Default: search .ort/lib of the source checkout,
    /// <exe dir>/lib, <exe dir>, /opt/onnxruntime/lib.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,

    /// Seconds to finish in-flight requests after SIGTERM (SageMaker kills at 30).
    #[arg(long, env = "MLAPP_SHUTDOWN_TIMEOUT", default_value_t = 25)]
    pub shutdown_timeout: u64,

    /// Warm-up runs per session before /ping reports ready.
    #[arg(long, env = "MLAPP_WARMUP_RUNS", default_value_t = 1)]
    pub warmup_runs: usize,

    /// Rows of synthetic input per warm-up run.
    #[arg(long, env = "MLAPP_WARMUP_ROWS", default_value_t = 8)]
    pub warmup_rows: usize,

    /// MiB of request bodies held at once, summed over all requests being read or scored;
    /// past it a new body gets 503 with Retry-After at once. Default: 8 bodies at the
    /// payload limit, at least 256 MiB.
    #[arg(long, env = "MLAPP_BODY_MEMORY_MB")]
    pub body_memory_mb: Option<f64>,

    /// Milliseconds of inference an HTTP thread may run per event-loop turn for small
    /// requests (scored where they arrived, without a thread hop); costlier ones go to the
    /// inference threads. Everything else on that thread, /ping included, waits that long at
    /// most. 0: always hand off.
    #[arg(long, env = "MLAPP_INLINE_BUDGET_MS", default_value_t = 2.0)]
    pub inline_budget_ms: f64,

    /// Seconds a request body may stall (no bytes arriving) before the request gets 408 and
    /// its connection is closed. Request heads must arrive within 5 s.
    #[arg(long, env = "MLAPP_BODY_IDLE_TIMEOUT", default_value_t = 30.0)]
    pub body_idle_timeout: f64,

    /// Size of the pieces large line-oriented bodies are scored in, in MiB: pieces are
    /// parsed, scored and encoded in parallel across sessions (see bench/README.md).
    #[arg(long, env = "MLAPP_CHUNK_MB", default_value_t = 1.0)]
    pub chunk_mb: f64,

    /// File of bearer tokens, one per line (blank lines and # comments skipped). When set,
    /// every route of the main port but /ping needs `Authorization: Bearer <token>`; the
    /// file is re-read on SIGHUP. For VMs: SageMaker authenticates callers itself.
    #[arg(long, env = "MLAPP_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// PEM certificate chain (leaf first): serve HTTPS on the main port. Needs --tls-key.
    #[arg(long, env = "MLAPP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "MLAPP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// Which model, and from where: shared by `serve` and `transform`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Folder holding the model: one *.onnx file, or the one named by the model config file.
    /// Never written to.
    #[arg(long, env = "MLAPP_MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,

    /// Name of the optional model config file inside the model folder.
    #[arg(long, env = "MLAPP_MODEL_CONFIG", default_value = "mlapp.json")]
    pub model_config: String,

    /// Where the model comes from, instead of --model-dir: a local folder, `.onnx` file or
    /// `.tar.gz` / `.tar` archive, or s3://bucket/key.onnx, s3://bucket/key/model.tar.gz,
    /// s3://bucket/prefix/ (a folder).
    #[arg(long, env = "MODEL_URI")]
    pub model_uri: Option<String>,

    #[command(flatten)]
    pub source: SourceArgs,
}

impl ModelArgs {
    /// The model's URI: --model-uri, else the --model-dir folder.
    pub fn uri(&self) -> String {
        self.model_uri
            .clone()
            .unwrap_or_else(|| self.model_dir.display().to_string())
    }

    pub fn source_options(&self) -> SourceOptions {
        self.source.options(&self.model_config)
    }
}

/// How models are fetched: the cache, S3 addressing, and the caps on archives.
#[derive(Args, Clone, Debug)]
pub struct SourceArgs {
    /// Writable folder for downloaded and unpacked models (never the model folder).
    /// Default: $XDG_CACHE_HOME/mlapp/models, else /var/cache/mlapp/models, else
    /// ~/.cache/mlapp/models, the first writable; else <temp dir>/mlapp-models.
    #[arg(long, env = "MLAPP_MODEL_CACHE_DIR")]
    pub model_cache_dir: Option<PathBuf>,

    /// Address S3 by path (http://endpoint/bucket/key), as most S3-compatible stores behind
    /// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL need.
    #[arg(
        long,
        env = "MLAPP_S3_FORCE_PATH_STYLE",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub s3_force_path_style: bool,

    /// Largest size a model archive may unpack to, in MiB.
    #[arg(long, env = "MLAPP_ARCHIVE_MAX_MB", default_value_t = 4096)]
    pub archive_max_mb: u64,

    /// Most entries (files, folders, links) a model archive may hold.
    #[arg(long, env = "MLAPP_ARCHIVE_MAX_FILES", default_value_t = 10_000)]
    pub archive_max_files: u64,

    /// Largest compression ratio of a model archive (unpacked / packed); beyond it the
    /// archive is refused as a decompression bomb.
    #[arg(long, env = "MLAPP_ARCHIVE_MAX_RATIO", default_value_t = 200)]
    pub archive_max_ratio: u64,
}

impl SourceArgs {
    pub fn options(&self, config_name: &str) -> SourceOptions {
        SourceOptions {
            cache_dir: self
                .model_cache_dir
                .clone()
                .unwrap_or_else(crate::model::cache::default_dir),
            limits: Limits {
                max_bytes: self.archive_max_mb.saturating_mul(1 << 20),
                max_files: self.archive_max_files,
                max_ratio: self.archive_max_ratio.max(1),
            },
            s3: S3Options {
                force_path_style: self.s3_force_path_style,
            },
            config_name: config_name.to_string(),
        }
    }
}

impl ServeConfig {
    /// How often to poll the model URI, if at all.
    pub fn model_poll(&self) -> Option<Duration> {
        (self.model_poll_seconds > 0.0).then(|| Duration::from_secs_f64(self.model_poll_seconds))
    }

    /// The CPUs this process may use (cgroup quota and affinity included).
    pub fn cpus() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// What `GET /execution-parameters` answers.
    pub fn execution_parameters(&self) -> ExecutionParameters {
        ExecutionParameters::suggest(
            self.sessions(),
            self.max_concurrent_transforms,
            self.max_payload_mb.map(|m| m.ceil() as usize),
            self.batch_strategy,
        )
    }

    pub fn max_payload_bytes(&self) -> usize {
        let mb = match self.max_payload_mb {
            Some(mb) => mb,
            None if self.batch => self.execution_parameters().max_payload_in_mb as f64,
            None => 6.0,
        };
        // 0 asks for chunked bodies of any size: line-oriented ones are scored as they arrive
        // (`stream`); any other is read whole, up to the largest payload SageMaker
        // sends otherwise.
        let mb = if mb > 0.0 { mb } else { 100.0 };
        (mb * MIB) as usize
    }

    /// Batch Transform with `MaxPayloadInMB=0`: line-oriented bodies of any size.
    pub fn unbounded_bodies(&self) -> bool {
        self.batch && self.max_payload_mb == Some(0.0)
    }

    pub fn request_timeout(&self) -> Duration {
        let secs = self
            .timeout
            .unwrap_or(if self.batch { 600.0 } else { 60.0 });
        Duration::from_secs_f64(secs.max(0.001))
    }

    pub fn body_memory_bytes(&self) -> usize {
        match self.body_memory_mb {
            Some(mb) => (mb * MIB) as usize,
            None => self.max_payload_bytes().saturating_mul(8).max(256 << 20),
        }
    }

    pub fn chunk_bytes(&self) -> usize {
        (self.chunk_mb * MIB) as usize
    }

    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_idle_timeout)
    }

    pub fn inline_budget(&self) -> Duration {
        Duration::from_secs_f64(self.inline_budget_ms / 1e3)
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_secs_f64(self.max_batch_delay_ms / 1e3)
    }

    pub fn sessions(&self) -> usize {
        // `cuda` is known to run on GPUs; `auto` finds out only at load (`cuda_sessions` below).
        if self.device == crate::engine::Device::Cuda {
            self.cuda_sessions()
        } else {
            self.workers.unwrap_or_else(Self::cpus).max(1)
        }
    }

    /// Sessions when the model runs on CUDA: --workers, else a few per visible GPU.
    pub fn cuda_sessions(&self) -> usize {
        crate::engine::session::cuda_sessions(self.workers, crate::engine::session::visible_gpus())
    }

    pub fn http_workers(&self) -> usize {
        self.http_workers.unwrap_or_else(Self::cpus).max(1)
    }

    /// Rejects settings that cannot work, with the option's name. Every number has an upper
    /// bound too: past it a duration no longer fits an `Instant` (a panic at the first request
    /// or inside a worker holding the queue lock), or a count allocates without end.
    pub fn validate(&self) -> Result<(), String> {
        self.registry.validate()?;
        if self.registry.multi() && self.monitor.baseline_uri.is_some() {
            return Err(
                "--baseline-uri is one baseline for one model; in multi-model mode each \
                        model's folder brings its own baseline/"
                    .into(),
            );
        }
        if let Some(mb) = self.max_payload_mb {
            in_range(
                "--max-payload-mb / SAGEMAKER_MAX_PAYLOAD_IN_MB",
                mb,
                0.0,
                MAX_PAYLOAD_MB,
            )?;
        }
        if let Some(t) = self.timeout {
            in_range(
                "--timeout / SAGEMAKER_MODEL_SERVER_TIMEOUT",
                t,
                0.001,
                DAY_SECS,
            )?;
        }
        in_range(
            "--model-poll-seconds / MLAPP_MODEL_POLL_SECONDS",
            self.model_poll_seconds,
            0.0,
            DAY_SECS,
        )?;
        if let Some(mb) = self.body_memory_mb {
            in_range(
                "--body-memory-mb / MLAPP_BODY_MEMORY_MB",
                mb,
                1.0,
                MAX_PAYLOAD_MB,
            )?;
            // Smaller, a body within the limit would get 503 "retry" for ever.
            if self.body_memory_bytes() < self.max_payload_bytes() {
                return Err(format!(
                    "--body-memory-mb / MLAPP_BODY_MEMORY_MB ({mb}) must be at least the payload limit ({} MiB)",
                    self.max_payload_bytes() >> 20
                ));
            }
        }
        in_range(
            "--body-idle-timeout / MLAPP_BODY_IDLE_TIMEOUT",
            self.body_idle_timeout,
            0.001,
            DAY_SECS,
        )?;
        // A piece is held a few times over in memory: past 1 GiB it is a typo, not a setting.
        in_range("--chunk-mb / MLAPP_CHUNK_MB", self.chunk_mb, 0.001, 1024.0)?;
        in_range(
            "--inline-budget-ms / MLAPP_INLINE_BUDGET_MS",
            self.inline_budget_ms,
            0.0,
            1_000.0,
        )?;
        in_range(
            "--max-batch-delay-ms / MLAPP_MAX_BATCH_DELAY_MS",
            self.max_batch_delay_ms,
            0.0,
            60_000.0,
        )?;
        let counts = [
            (
                "--workers / SAGEMAKER_MODEL_SERVER_WORKERS",
                self.workers,
                1,
                MAX_THREADS,
            ),
            (
                "--http-workers / MLAPP_HTTP_WORKERS",
                self.http_workers,
                1,
                MAX_THREADS,
            ),
            (
                "--max-concurrent-transforms",
                self.max_concurrent_transforms,
                1,
                100_000,
            ),
            (
                "--intra-op-threads / MLAPP_INTRA_OP_THREADS",
                Some(self.intra_op_threads),
                1,
                MAX_THREADS,
            ),
            (
                "--queue-capacity / MLAPP_QUEUE_CAPACITY",
                Some(self.queue_capacity),
                1,
                1_000_000,
            ),
            (
                "--max-batch-rows / MLAPP_MAX_BATCH_ROWS",
                Some(self.max_batch_rows),
                1,
                1_000_000,
            ),
            (
                "--warmup-runs / MLAPP_WARMUP_RUNS",
                Some(self.warmup_runs),
                0,
                1_000,
            ),
            (
                "--warmup-rows / MLAPP_WARMUP_ROWS",
                Some(self.warmup_rows),
                1,
                100_000,
            ),
        ];
        for (name, value, lo, hi) in counts {
            if let Some(v) = value.filter(|v| !(lo..=hi).contains(v)) {
                return Err(format!("{name} must be between {lo} and {hi}, got {v}"));
            }
        }
        if self.shutdown_timeout > 3_600 {
            return Err(format!(
                "--shutdown-timeout / MLAPP_SHUTDOWN_TIMEOUT must be at most 3600 seconds, got {}",
                self.shutdown_timeout
            ));
        }
        if let Some(accept) = &self.default_accept {
            if crate::codec::media::parse_output(accept).is_none() {
                return Err(format!(
                    "--default-accept / SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT \"{accept}\" is not one of {}",
                    crate::codec::media::ACCEPTED_ACCEPT_TYPES
                ));
            }
        }
        crate::codec::media::input_format(Some(&self.default_content_type), "", false, b"")
            .map_err(|e| format!("--default-content-type: {e}"))?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err("--tls-cert / MLAPP_TLS_CERT needs --tls-key / MLAPP_TLS_KEY".into())
            }
            (None, Some(_)) => {
                return Err("--tls-key / MLAPP_TLS_KEY needs --tls-cert / MLAPP_TLS_CERT".into())
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn parse(args: &[&str]) -> ServeConfig {
        let mut argv = vec!["mlapp", "--workers", "2"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).serve
    }

    #[test]
    fn cuda_defaults_to_a_few_sessions_per_gpu_and_the_cpu_to_the_cpu_count() {
        let cli = |args: &[&str]| Cli::parse_from([&["mlapp"][..], args].concat()).serve;
        let cuda =
            crate::engine::session::cuda_sessions(None, crate::engine::session::visible_gpus());
        assert_eq!(cli(&["--device", "cuda"]).sessions(), cuda);
        assert_eq!(cli(&["--device", "auto"]).cuda_sessions(), cuda);
        assert_eq!(cli(&["--device", "cuda", "--workers", "5"]).sessions(), 5);
        assert_eq!(
            cli(&["--device", "cuda", "--workers", "5"]).cuda_sessions(),
            5
        );
        assert_eq!(cli(&["--device", "cpu"]).sessions(), ServeConfig::cpus());
        assert_eq!(cli(&["--device", "auto"]).sessions(), ServeConfig::cpus());
    }

    #[test]
    fn batch_mode_raises_the_body_limit_and_the_timeout() {
        let online = parse(&[]);
        assert_eq!(online.max_payload_bytes(), 6 << 20);
        assert_eq!(online.request_timeout(), Duration::from_secs(60));
        let batch = parse(&["--batch"]);
        assert_eq!(batch.max_payload_bytes(), 50 << 20);
        assert_eq!(batch.request_timeout(), Duration::from_secs(600));
        let set = parse(&["--batch", "--max-payload-mb", "20", "--timeout", "90"]);
        assert_eq!(set.max_payload_bytes(), 20 << 20);
        assert_eq!(set.request_timeout(), Duration::from_secs(90));
        assert_eq!(parse(&["--batch=False"]).max_payload_bytes(), 6 << 20);
        assert_eq!(
            parse(&["--max-payload-mb", "0"]).max_payload_bytes(),
            100 << 20
        );
    }

    #[test]
    fn tls_needs_both_a_certificate_and_a_key() {
        assert!(parse(&[]).validate().is_ok());
        assert!(parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .validate()
            .is_ok());
        let e = parse(&["--tls-cert", "c.pem"]).validate().unwrap_err();
        assert!(e.contains("needs --tls-key"), "{e}");
        let e = parse(&["--tls-key", "k.pem"]).validate().unwrap_err();
        assert!(e.contains("needs --tls-cert"), "{e}");
    }
}
