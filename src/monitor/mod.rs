//! What the server reports about itself, and what it sees in the data it scores.
//!
//! - `metrics`: Prometheus counters and histograms of the server.
//! - `capture`: prediction capture in SageMaker Data Capture's layout, written off the
//!   request path by a writer thread behind a bounded queue.
//! - `sketch`: mergeable sketches (KLL quantiles, HyperLogLog distinct counts); `radix`, the
//!   sort their compactions take.
//! - `profile`: per-feature statistics built from decoded frames or CSV rows; `counts`, what
//!   every value adds to them.
//! - `files`: Model Monitor's `statistics.json`, `constraints.json` and
//!   `constraint_violations.json`.
//! - `check`: the data-quality checks of a profile against a baseline.
//! - `live`: the server's monitoring window, its Prometheus series and `GET /monitoring`.
//! - `report`: the self-contained HTML report.
//! - `offline`: `mlapp baseline` and `mlapp monitor`.
//! - `shadow`: a challenger model scoring a share of live requests, compared with the served one.

pub mod capture;
mod captured_v2;
pub mod check;
mod counts;
pub mod files;
pub mod live;
pub mod metrics;
pub mod offline;
pub mod profile;
mod radix;
pub mod report;
pub mod setup;
pub mod shadow;
pub mod sketch;

use std::sync::Arc;

/// Where one input's pieces (or one request) are captured, with the content types the
/// caller sent and was answered in.
pub struct Tap {
    pub capture: Arc<capture::Capture>,
    pub input_type: Arc<str>,
    pub output_type: Arc<str>,
    pub inference_id: Option<String>,
}

impl Tap {
    pub fn record(&self, input: bytes::Bytes, output: bytes::Bytes) {
        self.capture.record(capture::Record {
            input: Some(capture::Payload {
                content_type: Arc::clone(&self.input_type),
                data: input,
            }),
            output: Some(capture::Payload {
                content_type: Arc::clone(&self.output_type),
                data: output,
            }),
            inference_id: self.inference_id.clone(),
            time: std::time::SystemTime::now(),
        });
    }
}

pub use metrics::{Live, Metrics, ModelInfo, Route, Stage};

/// The capture writer's counters in the Prometheus text format.
pub fn capture_metrics(s: &capture::CaptureStats, out: &mut String) {
    use std::fmt::Write as _;
    let name = "mlapp_capture_records_total";
    metrics::header(
        out,
        name,
        "counter",
        "Captured records, by what became of them.",
    );
    for (outcome, n) in [
        ("written", s.written),
        ("dropped_full", s.dropped_full),
        ("dropped_error", s.dropped_error),
    ] {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
    }
    metrics::counter(
        out,
        "mlapp_capture_files_total",
        "Capture files closed.",
        s.files,
    );
    metrics::counter(
        out,
        "mlapp_capture_upload_failures_total",
        "Capture files whose upload failed every attempt (kept in the spool).",
        s.upload_failures,
    );
}
