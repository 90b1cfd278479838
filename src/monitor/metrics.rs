//! Prometheus metrics, kept in atomics on the request path and rendered in the text
//! exposition format (version 0.0.4) on scrape. Hand-written rather than a client crate: the
//! set is small and fixed, and recording must cost a few atomic adds.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Latency buckets in seconds, 50 µs to 60 s: one-row requests sit in the first few, Batch
/// Transform mini-batches in the last.
pub(crate) const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];
const ROWS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0,
];
const REQUESTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one for +Inf.
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            f64::from_bits(self.sum_bits.load(Relaxed))
        );
        // The count written is the +Inf bucket's, so the two agree within one scrape.
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Routes get a fixed label so unknown paths cannot grow the series without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    Ping,
    Invocations,
    Metrics,
    ExecutionParameters,
    Info,
    /// `/models/{name}/invoke` (multi-model mode).
    ModelInvoke,
    /// `/v2/models/{name}[/versions/{v}]/infer`.
    V2Infer,
    Other,
}

impl Route {
    pub const ALL: [Route; 8] = [
        Route::Ping,
        Route::Invocations,
        Route::Metrics,
        Route::ExecutionParameters,
        Route::Info,
        Route::ModelInvoke,
        Route::V2Infer,
        Route::Other,
    ];

    pub fn of(path: &str) -> Route {
        match path {
            "/ping" => Route::Ping,
            "/invocations" => Route::Invocations,
            "/metrics" => Route::Metrics,
            "/execution-parameters" => Route::ExecutionParameters,
            "/info" => Route::Info,
            p if p.starts_with("/models/") && p.ends_with("/invoke") => Route::ModelInvoke,
            p if p.starts_with("/v2/models/") && p.ends_with("/infer") => Route::V2Infer,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Ping => "/ping",
            Route::Invocations => "/invocations",
            Route::Metrics => "/metrics",
            Route::ExecutionParameters => "/execution-parameters",
            Route::Info => "/info",
            Route::ModelInvoke => "/models/{name}/invoke",
            Route::V2Infer => "/v2/models/{name}/infer",
            Route::Other => "other",
        }
    }
}

const CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

fn class(status: u16) -> usize {
    match status {
        ..=399 => 0,
        400..=499 => 1,
        _ => 2,
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Decode,
    Queue,
    Inference,
    Encode,
}

const STAGES: [(Stage, &str); 4] = [
    (Stage::Decode, "decode"),
    (Stage::Queue, "queue"),
    (Stage::Inference, "inference"),
    (Stage::Encode, "encode"),
];

/// What the active model is, for the info series and `GET /info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    /// The metrics label (the folder's name), not part of `/info`.
    #[serde(skip)]
    pub name: Arc<str>,
    pub file: String,
    pub kind: String,
    pub provider: String,
    pub load_seconds: f64,
    pub sessions: usize,
    /// Where it came from, and which version of it (ETag or content hash).
    pub uri: String,
    pub version: String,
    pub loaded_at_unix: f64,
    /// What the warm-up ran on and found, and whether requests are coalesced (and why not).
    pub warmup: String,
    pub batching: String,
}

/// Values read from the live server at scrape time rather than counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Live {
    pub ready: bool,
    pub in_flight: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
}

/// Route, status, model ("" where no model served the request).
type RequestKey = (Route, u16, Arc<str>);

pub struct Metrics {
    started: SystemTime,
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    /// By route and status class (2xx, 4xx, 5xx), so that the latency of answered requests
    /// is not hidden among fast refusals under overload.
    request_seconds: [[Histogram; 3]; Route::ALL.len()],
    stage_seconds: [Histogram; 4],
    pub batch_rows: Histogram,
    pub batch_requests: Histogram,
    rows_scored: AtomicU64,
    runs: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    model: RwLock<Option<ModelInfo>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    panics: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started: SystemTime::now(),
            requests: Mutex::new(BTreeMap::new()),
            request_seconds: std::array::from_fn(|_| {
                std::array::from_fn(|_| Histogram::new(SECONDS))
            }),
            stage_seconds: std::array::from_fn(|_| Histogram::new(SECONDS)),
            batch_rows: Histogram::new(ROWS),
            batch_requests: Histogram::new(REQUESTS),
            rows_scored: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            model: RwLock::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        }
    }

    pub fn request(&self, route: Route, status: u16, model: Option<&Arc<str>>, took: Duration) {
        self.request_seconds[route as usize][class(status)].observe_duration(took);
        let model = model.cloned().unwrap_or_else(|| Arc::from(""));
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route, status, model)).or_insert(0) += 1;
    }

    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stage_seconds[stage as usize].observe_duration(took);
    }

    pub fn stage_count(&self, stage: Stage) -> u64 {
        self.stage_seconds[stage as usize].count()
    }

    /// One ORT run of `requests` requests holding `rows` rows.
    pub fn run(&self, requests: usize, rows: usize) {
        self.runs.fetch_add(1, Relaxed);
        self.rows_scored.fetch_add(rows as u64, Relaxed);
        self.batch_rows.observe(rows as f64);
        self.batch_requests.observe(requests as f64);
    }

    /// A handler that panicked (a bug): its client got a 500.
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: &'static str) {
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(reason).or_insert(0) += 1;
    }

    /// One reload (SIGHUP or poll) that switched to a new model, or failed and kept the old.
    pub fn reload(&self, ok: bool) {
        let n = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        n.fetch_add(1, Relaxed);
    }

    pub fn set_model(&self, info: ModelInfo) {
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }

    pub fn render(&self, live: Live) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let o = &mut out;
        header(
            o,
            "mlapp_http_requests_total",
            "counter",
            "HTTP requests answered, by route, status and model.",
        );
        for ((route, status, model), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let model = if model.is_empty() {
                String::new()
            } else {
                format!(",model=\"{}\"", escape(model))
            };
            let _ = writeln!(
                o,
                "mlapp_http_requests_total{{route=\"{}\",status=\"{status}\"{model}}} {n}",
                route.label()
            );
        }
        header(
            o,
            "mlapp_http_request_duration_seconds",
            "histogram",
            "Time from request to response, by route and status class.",
        );
        for route in Route::ALL {
            for (i, code) in CLASSES.iter().enumerate() {
                self.request_seconds[route as usize][i].render(
                    o,
                    "mlapp_http_request_duration_seconds",
                    &format!("route=\"{}\",code=\"{code}\"", route.label()),
                );
            }
        }
        header(
            o,
            "mlapp_stage_duration_seconds",
            "histogram",
            "Time /invocations requests spend in each stage: decode, queue, inference, encode.",
        );
        for (stage, name) in STAGES {
            self.stage_seconds[stage as usize].render(
                o,
                "mlapp_stage_duration_seconds",
                &format!("stage=\"{name}\""),
            );
        }
        header(
            o,
            "mlapp_batch_rows",
            "histogram",
            "Rows per ONNX Runtime run.",
        );
        self.batch_rows.render(o, "mlapp_batch_rows", "");
        header(
            o,
            "mlapp_batch_requests",
            "histogram",
            "Requests coalesced into one ONNX Runtime run.",
        );
        self.batch_requests.render(o, "mlapp_batch_requests", "");
        counter(
            o,
            "mlapp_rows_scored_total",
            "Rows scored by the model.",
            self.rows_scored.load(Relaxed),
        );
        counter(
            o,
            "mlapp_inference_runs_total",
            "ONNX Runtime runs.",
            self.runs.load(Relaxed),
        );
        counter(
            o,
            "mlapp_handler_panics_total",
            "Requests whose handler panicked (a bug); each was answered 500.",
            self.panics.load(Relaxed),
        );
        header(
            o,
            "mlapp_rejected_requests_total",
            "counter",
            "Requests answered with an error, by reason (the error code).",
        );
        for (reason, n) in self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "mlapp_rejected_requests_total{{reason=\"{reason}\"}} {n}"
            );
        }
        gauge(
            o,
            "mlapp_requests_in_flight",
            "Requests admitted to the engine and not yet answered (the admission-control bound is mlapp_queue_capacity).",
            live.in_flight as f64,
        );
        gauge(
            o,
            "mlapp_queue_depth",
            "Requests waiting in the worker threads' queue.",
            live.queue_depth as f64,
        );
        gauge(
            o,
            "mlapp_queue_capacity",
            "Requests that may be in flight before new ones are refused.",
            live.queue_capacity as f64,
        );
        gauge(
            o,
            "mlapp_model_ready",
            "1 when the model is loaded and /ping answers 200.",
            f64::from(u8::from(live.ready)),
        );
        if let Some(m) = self
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            header(
                o,
                "mlapp_model_info",
                "gauge",
                "The active model and its version.",
            );
            let _ = writeln!(
                o,
                "mlapp_model_info{{model=\"{}\",file=\"{}\",kind=\"{}\",sessions=\"{}\",uri=\"{}\",version=\"{}\"}} 1",
                escape(&m.name),
                escape(&m.file),
                escape(&m.kind),
                m.sessions,
                escape(&m.uri),
                escape(&m.version)
            );
            gauge(
                o,
                "mlapp_model_loaded_timestamp_seconds",
                "When the active model version started serving (Unix time).",
                m.loaded_at_unix,
            );
            header(
                o,
                "mlapp_execution_provider_info",
                "gauge",
                "The ONNX Runtime execution provider the model runs on.",
            );
            let _ = writeln!(
                o,
                "mlapp_execution_provider_info{{provider=\"{}\"}} 1",
                escape(&m.provider)
            );
            gauge(
                o,
                "mlapp_model_load_seconds",
                "Time to load and warm up the active model.",
                m.load_seconds,
            );
        }
        header(
            o,
            "mlapp_model_reloads_total",
            "counter",
            "Model reloads (SIGHUP or a new version found by polling), by result; a failed one keeps the previous model serving.",
        );
        for (result, n) in [
            ("success", &self.reloads_ok),
            ("failure", &self.reloads_failed),
        ] {
            let _ = writeln!(
                o,
                "mlapp_model_reloads_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
        header(
            o,
            "mlapp_build_info",
            "gauge",
            "mlapp and ONNX Runtime versions.",
        );
        let _ = writeln!(
            o,
            "mlapp_build_info{{version=\"{}\",onnxruntime=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::engine::runtime::ORT_VERSION
        );
        process(o, self.started);
        out
    }
}

pub(crate) fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

pub(crate) fn gauge(o: &mut String, name: &str, help: &str, v: f64) {
    header(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

/// A Prometheus label value, escaped.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The standard process series, from /proc (absent elsewhere).
fn process(o: &mut String, started: SystemTime) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let Some(rss) = kb("VmRSS:") {
            gauge(
                o,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss * 1024.0,
            );
        }
        if let Some(vm) = kb("VmSize:") {
            gauge(
                o,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                vm * 1024.0,
            );
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are the 12th and
        // 13th of them, in clock ticks (100 per second on Linux).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (ticks(11), ticks(12)) {
            header(
                o,
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent in seconds.",
            );
            let _ = writeln!(o, "process_cpu_seconds_total {}", (u + s) / 100.0);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            o,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let start = started.duration_since(UNIX_EPOCH).unwrap_or_default();
    gauge(
        o,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        start.as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_agree_with_the_count() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 5.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 8\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_status_and_model() {
        let m = Metrics::new();
        let model: Arc<str> = Arc::from("gender\"x");
        m.request(
            Route::Invocations,
            200,
            Some(&model),
            Duration::from_millis(1),
        );
        m.request(
            Route::Invocations,
            200,
            Some(&model),
            Duration::from_millis(1),
        );
        m.request(Route::of("/nope"), 404, None, Duration::from_millis(1));
        let text = m.render(Live::default());
        assert!(text.contains(
            "mlapp_http_requests_total{route=\"/invocations\",status=\"200\",model=\"gender\\\"x\"} 2\n"
        ), "{text}");
        assert!(
            text.contains("mlapp_http_requests_total{route=\"other\",status=\"404\"} 1\n"),
            "{text}"
        );
    }
}
