//! Every option of `mlapp serve`, as a flag and an environment variable. SageMaker's
//! environment names are mapped here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    /// Folder holding the model: one *.onnx file, or the one named by the model config file.
    /// Never written to.
    #[arg(long, env = "MLAPP_MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,

    /// Name of the optional model config file inside the model folder.
    #[arg(long, env = "MLAPP_MODEL_CONFIG", default_value = "mlapp.json")]
    pub model_config: String,

    /// Address to listen on.
    #[arg(long, env = "MLAPP_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Largest request body, in MiB; larger bodies get 413. 0 means the Batch Transform
    /// maximum of 100 MiB.
    #[arg(long, env = "SAGEMAKER_MAX_PAYLOAD_IN_MB", default_value_t = 6.0)]
    pub max_payload_mb: f64,

    /// Seconds a request may take, queueing included; later it gets 504.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_TIMEOUT", default_value_t = 60.0)]
    pub timeout: f64,

    /// Inference sessions (one worker thread each). Default: the CPUs this process may use.
    #[arg(long, env = "SAGEMAKER_MODEL_SERVER_WORKERS")]
    pub workers: Option<usize>,

    /// HTTP worker threads. Default: the CPUs this process may use.
    #[arg(long, env = "MLAPP_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

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

    /// Answer type when Accept is missing or */*.
    #[arg(
        long,
        env = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
        default_value = "application/json"
    )]
    pub default_accept: String,

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
}

impl ServeConfig {
    /// The CPUs this process may use (cgroup quota and affinity included).
    pub fn cpus() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    pub fn max_payload_bytes(&self) -> usize {
        let mb = if self.max_payload_mb > 0.0 {
            self.max_payload_mb
        } else {
            100.0
        };
        (mb * MIB) as usize
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.001))
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_secs_f64(self.max_batch_delay_ms / 1e3)
    }

    pub fn sessions(&self) -> usize {
        self.workers.unwrap_or_else(Self::cpus).max(1)
    }

    pub fn http_workers(&self) -> usize {
        self.http_workers.unwrap_or_else(Self::cpus).max(1)
    }

    /// Rejects settings that cannot work, with the option's name.
    pub fn validate(&self) -> Result<(), String> {
        if !self.max_payload_mb.is_finite() || self.max_payload_mb < 0.0 {
            return Err(format!(
                "--max-payload-mb / SAGEMAKER_MAX_PAYLOAD_IN_MB must be >= 0, got {}",
                self.max_payload_mb
            ));
        }
        if !self.timeout.is_finite() || self.timeout <= 0.0 {
            return Err(format!(
                "--timeout / SAGEMAKER_MODEL_SERVER_TIMEOUT must be > 0 seconds, got {}",
                self.timeout
            ));
        }
        if !self.max_batch_delay_ms.is_finite() || self.max_batch_delay_ms < 0.0 {
            return Err(format!(
                "--max-batch-delay-ms / MLAPP_MAX_BATCH_DELAY_MS must be >= 0, got {}",
                self.max_batch_delay_ms
            ));
        }
        if crate::codec::media::parse_output(&self.default_accept).is_none() {
            return Err(format!(
                "--default-accept / SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT \"{}\" is not one of {}",
                self.default_accept,
                crate::codec::media::ACCEPTED_ACCEPT_TYPES
            ));
        }
        crate::codec::media::input_format(Some(&self.default_content_type), "", false, b"")
            .map_err(|e| format!("--default-content-type: {e}"))?;
        Ok(())
    }
}
