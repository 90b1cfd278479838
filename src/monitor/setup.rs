//! The capture and monitoring options `serve` and `transform` share, and what they start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::capture::{Capture, CaptureConfig, CaptureMode};
use super::check::Baseline;
use super::files::{self, Constraints, Statistics};
use super::live::{Monitor, Window};
use crate::engine::LoadedModel;
use crate::storage::{S3Options, S3Store, S3Uri};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Monitoring {
    /// On when the model folder has a `baseline/` or --baseline-uri is given.
    Auto,
    /// Always: without a baseline, statistics only (no checks).
    On,
    Off,
}

#[derive(Args, Clone, Debug)]
pub struct MonitorArgs {
    /// Capture requests and answers in SageMaker Data Capture's layout to this local folder or
    /// s3://bucket/prefix ({prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl, UTC). Off when
    /// unset.
    #[arg(long, env = "MLAPP_CAPTURE_URI")]
    pub capture_uri: Option<String>,

    /// Percent of requests captured (0-100).
    #[arg(long, env = "MLAPP_CAPTURE_PERCENT", default_value_t = 100.0)]
    pub capture_percent: f64,

    /// What is captured: input, output or both.
    #[arg(long, env = "MLAPP_CAPTURE_MODE", default_value = "both")]
    pub capture_mode: String,

    /// The endpoint name in capture paths. Default: the model's name.
    #[arg(long, env = "MLAPP_CAPTURE_ENDPOINT")]
    pub capture_endpoint: Option<String>,

    /// The variant name in capture paths.
    #[arg(long, env = "MLAPP_CAPTURE_VARIANT", default_value = "AllTraffic")]
    pub capture_variant: String,

    /// Content types captured as CSV text (the rest of the non-JSON ones as BASE64).
    #[arg(long, value_delimiter = ',', default_value = "text/csv")]
    pub capture_csv_types: Vec<String>,

    /// Content types captured as JSON text.
    #[arg(long, value_delimiter = ',', default_value = "application/json")]
    pub capture_json_types: Vec<String>,

    /// A capture file is closed and made visible (uploaded) after this many seconds.
    #[arg(long, env = "MLAPP_CAPTURE_ROLL_SECONDS", default_value_t = 60)]
    pub capture_roll_seconds: u64,

    /// Model Monitor baseline (statistics.json and constraints.json) in a local folder or
    /// s3://bucket/prefix/. Default: the model folder's `baseline/`, when it has one.
    #[arg(long, env = "MLAPP_BASELINE_URI")]
    pub baseline_uri: Option<String>,

    /// Live data-quality monitoring of scored rows against the baseline.
    #[arg(long, env = "MLAPP_MONITORING", value_enum, default_value = "auto")]
    pub monitoring: Monitoring,

    /// A monitoring window closes after this many rows...
    #[arg(long, env = "MLAPP_MONITOR_WINDOW_ROWS", default_value_t = 100_000)]
    pub monitor_window_rows: u64,

    /// ...or this many seconds, whichever comes first.
    #[arg(long, env = "MLAPP_MONITOR_WINDOW_SECONDS", default_value_t = 300)]
    pub monitor_window_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Capture(#[from] super::capture::CaptureError),
    #[error("baseline: {0}")]
    File(#[from] files::FileError),
    #[error("{0}")]
    Mismatch(String),
    #[error("baseline {uri}: {message}")]
    Fetch { uri: String, message: String },
}

impl MonitorArgs {
    /// The capture writer, when --capture-uri is set.
    pub fn capture(&self, model: &str, s3: &S3Options) -> Result<Option<Arc<Capture>>, SetupError> {
        let Some(uri) = &self.capture_uri else {
            return Ok(None);
        };
        let mode: CaptureMode = self.capture_mode.parse()?;
        let mut cfg = CaptureConfig::new(
            uri.clone(),
            self.capture_endpoint
                .clone()
                .unwrap_or_else(|| model.to_string()),
        );
        cfg.percent = self.capture_percent;
        cfg.mode = mode;
        cfg.variant = self.capture_variant.clone();
        cfg.csv_types = self.capture_csv_types.clone();
        cfg.json_types = self.capture_json_types.clone();
        cfg.roll_seconds = self.capture_roll_seconds.max(1);
        cfg.s3 = s3.clone();
        Ok(Some(Arc::new(Capture::start(cfg)?)))
    }

    /// The live monitor of a just-loaded model: the baseline from --baseline-uri, else from
    /// the model folder; a baseline that is there but unreadable fails the load.
    pub fn attach(
        &self,
        model: &LoadedModel,
        rt: &tokio::runtime::Runtime,
        s3: &S3Options,
    ) -> Result<Option<Arc<Monitor>>, SetupError> {
        if self.monitoring == Monitoring::Off {
            return Ok(None);
        }
        let baseline = match &self.baseline_uri {
            Some(uri) => Some((rt.block_on(fetch_baseline(uri, s3))?, uri.clone())),
            None => {
                let dir = model.source.dir.join("baseline");
                if dir.join("statistics.json").is_file() {
                    Some((read_baseline(&dir)?, dir.display().to_string()))
                } else {
                    None
                }
            }
        };
        if baseline.is_none() && self.monitoring == Monitoring::Auto {
            return Ok(None);
        }
        let window = Window {
            rows: self.monitor_window_rows,
            seconds: self.monitor_window_seconds,
        };
        Monitor::start(Arc::clone(&model.name), &model.signature, baseline, window)
            .map(Some)
            .map_err(SetupError::Mismatch)
    }
}

pub fn read_baseline(dir: &Path) -> Result<Baseline, SetupError> {
    let statistics: Statistics = files::read(&dir.join("statistics.json"), "statistics file")?;
    let constraints: Constraints = files::read(&dir.join("constraints.json"), "constraints file")?;
    Ok(Baseline::new(statistics, constraints))
}

/// A baseline from a local folder or an S3 prefix holding its two files.
pub async fn fetch_baseline(uri: &str, s3: &S3Options) -> Result<Baseline, SetupError> {
    let Some(parsed) = S3Uri::parse(uri) else {
        return read_baseline(&PathBuf::from(uri));
    };
    let fail = |message: String| SetupError::Fetch {
        uri: uri.to_string(),
        message,
    };
    let prefix = parsed.map_err(|e| fail(e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let store = S3Store::connect(s3).await;
    for name in ["statistics.json", "constraints.json"] {
        store
            .download(&prefix.join(name), &dir.path().join(name))
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    read_baseline(dir.path())
}
