//! The options of many models in one server: SageMaker's multi-model mode, a model
//! repository, the memory budget, and a shadow challenger.

use clap::Args;

use crate::config::in_range;

#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// Serve many models (SageMaker multi-model endpoints): the `/models` API loads, lists and
    /// unloads them; `/invocations` names one with `X-Amzn-SageMaker-Target-Model`. SageMaker
    /// sets SAGEMAKER_MULTI_MODEL=true itself.
    #[arg(long, env = "SAGEMAKER_MULTI_MODEL", value_parser = truthy, default_value = "false")]
    pub multi_model: bool,

    /// A folder or s3://bucket/prefix/ holding one model per sub-folder, archive
    /// (`name.tar.gz`) or `name.onnx`, each served under its name (implies multi-model mode).
    /// Every model is loaded at start, and a name asked for later is loaded on first use.
    #[arg(long, env = "MLAPP_MODEL_REPOSITORY")]
    pub model_repository: Option<String>,

    /// Memory the loaded models may take together, in MiB (estimated from each model's files
    /// and session count); least recently used models are unloaded to make room, and a model
    /// that cannot fit even alone gets 507. Default: half of the memory this process may use
    /// (its cgroup limit, else the machine's).
    #[arg(long, env = "MLAPP_MODEL_MEMORY_MB")]
    pub model_memory_mb: Option<f64>,

    /// Where `POST /models` may load from, comma-separated: folders (a URL must be inside one)
    /// and s3://bucket/prefix/ (a URL must start with one). SageMaker puts models under
    /// /opt/ml/models/<name>/model. Models of the repository are always allowed.
    #[arg(
        long,
        env = "MLAPP_MODEL_ROOTS",
        value_delimiter = ',',
        default_value = "/opt/ml/models"
    )]
    pub model_roots: Vec<String>,

    /// ONNX Runtime sessions (and inference threads) of each model in multi-model mode: one,
    /// as SageMaker's own multi-model server runs one worker per model, so fifty models do not
    /// take fifty times the CPUs' threads. Raise it for a few models with heavy traffic.
    #[arg(long, env = "MLAPP_SESSIONS_PER_MODEL", default_value_t = 1)]
    pub sessions_per_model: usize,

    /// A challenger scoring a share of live requests off the request path: its answers are
    /// compared with the served model's (agreement, label flips, score deltas), never
    /// returned. A local folder, file or archive, or an s3:// URI, as --model-uri.
    #[arg(long, env = "MLAPP_SHADOW_MODEL_URI")]
    pub shadow_model_uri: Option<String>,

    /// Percent of requests the shadow scores too.
    #[arg(long, env = "MLAPP_SHADOW_PERCENT", default_value_t = 10.0)]
    pub shadow_percent: f64,

    /// Longest a shadow run may take; later ones are counted as timed out and dropped.
    #[arg(long, env = "MLAPP_SHADOW_TIMEOUT_MS", default_value_t = 1000.0)]
    pub shadow_timeout_ms: f64,

    /// Variant name of the shadow's captured records (`{endpoint}/{variant}/...`), as
    /// SageMaker names a shadow variant's capture files.
    #[arg(long, env = "MLAPP_SHADOW_VARIANT", default_value = "Shadow")]
    pub shadow_variant: String,
}

/// SageMaker's own tools write `true`, `True` and `TRUE`.
fn truthy(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

impl RegistryArgs {
    /// Whether the server holds many named models rather than one.
    pub fn multi(&self) -> bool {
        self.multi_model || self.model_repository.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(mb) = self.model_memory_mb {
            in_range(
                "--model-memory-mb / MLAPP_MODEL_MEMORY_MB",
                mb,
                1.0,
                1024.0 * 1024.0 * 1024.0,
            )?;
        }
        in_range(
            "--shadow-percent / MLAPP_SHADOW_PERCENT",
            self.shadow_percent,
            0.0,
            100.0,
        )?;
        // A shadow run holds its body and the served outputs until it ends: a minute at most.
        in_range(
            "--shadow-timeout-ms / MLAPP_SHADOW_TIMEOUT_MS",
            self.shadow_timeout_ms,
            1.0,
            60_000.0,
        )?;
        in_range(
            "--sessions-per-model / MLAPP_SESSIONS_PER_MODEL",
            self.sessions_per_model as f64,
            1.0,
            256.0,
        )?;
        if self.shadow_model_uri.is_some() && self.multi() {
            return Err(
                "--shadow-model-uri shadows the one served model; it cannot be combined with \
                 multi-model mode (SAGEMAKER_MULTI_MODEL / --model-repository)"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn memory_budget_bytes(&self) -> u64 {
        match self.model_memory_mb {
            Some(mb) => (mb * 1024.0 * 1024.0) as u64,
            None => memory_limit() / 2,
        }
    }
}

/// The memory this process may use: its cgroup's limit (v2, then v1) when it has one, else
/// the machine's total.
pub fn memory_limit() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let total = read("/proc/meminfo")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| read(p)?.trim().parse::<u64>().ok())
    .next();
    cgroup.map_or(total, |c| c.min(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sagemakers_spellings_of_true_are_all_read() {
        for t in ["true", "True", "TRUE", "1"] {
            assert_eq!(truthy(t), Ok(true), "{t}");
        }
        for f in ["false", "False", "0", ""] {
            assert_eq!(truthy(f), Ok(false), "{f}");
        }
        assert!(truthy("maybe").unwrap_err().contains("maybe"));
    }

    #[test]
    fn the_budget_is_the_option_when_given() {
        // The machine's memory, read from /proc/meminfo (or the cgroup's limit).
        assert!(memory_limit() > 64 << 20);
        let small = RegistryArgs {
            model_memory_mb: Some(2.0),
            ..RegistryArgs::default()
        };
        assert_eq!(small.memory_budget_bytes(), 2 << 20);
    }

    #[test]
    fn a_shadow_needs_one_served_model() {
        let mut a = RegistryArgs {
            shadow_model_uri: Some("/m".into()),
            shadow_percent: 10.0,
            shadow_timeout_ms: 1000.0,
            sessions_per_model: 1,
            ..RegistryArgs::default()
        };
        assert!(a.validate().is_ok());
        a.multi_model = true;
        assert!(a.validate().unwrap_err().contains("multi-model"));
        a.multi_model = false;
        a.shadow_percent = 101.0;
        assert!(a.validate().unwrap_err().contains("--shadow-percent"));
    }
}
