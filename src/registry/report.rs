//! What the registry says of itself: `GET /models` entries and the Prometheus series.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use serde::Serialize;

use super::{Entry, Registry};
use crate::monitor::metrics::{counter, escape, gauge, header};

/// `GET /models` and `GET /models/{name}`, in SageMaker's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Described {
    pub model_name: String,
    pub model_url: String,
    pub version: String,
    pub memory_estimate_bytes: u64,
    pub invocations: u64,
    pub loaded_at_unix: f64,
    pub kind: &'static str,
    pub provider: &'static str,
}

impl Registry {
    /// The registry's series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let (loaded, used) = self.entries();
        gauge(
            out,
            "mlapp_models_loaded",
            "Models loaded and ready.",
            loaded.len() as f64,
        );
        gauge(
            out,
            "mlapp_models_memory_estimate_bytes",
            "Estimated memory of the loaded models, charged to the budget.",
            used as f64,
        );
        gauge(
            out,
            "mlapp_models_memory_budget_bytes",
            "The memory budget of the loaded models (--model-memory-mb).",
            self.budget as f64,
        );
        let c = &self.counters;
        let name = "mlapp_model_loads_total";
        header(out, name, "counter", "Model loads, by outcome.");
        for (outcome, n) in [("ok", &c.loads_ok), ("failed", &c.loads_failed)] {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {}", n.load(Relaxed));
        }
        let name = "mlapp_model_unloads_total";
        header(out, name, "counter", "Models unloaded, by why: asked (DELETE) or evicted (least recently used, to make room).");
        for (why, n) in [("asked", &c.unloads), ("evicted", &c.evictions)] {
            let _ = writeln!(out, "{name}{{reason=\"{why}\"}} {}", n.load(Relaxed));
        }
        counter(
            out,
            "mlapp_model_cache_hits_total",
            "Invocations whose model was already loaded.",
            c.hits.load(Relaxed),
        );
        counter(
            out,
            "mlapp_model_cache_misses_total",
            "Invocations that loaded their model first.",
            c.misses.load(Relaxed),
        );
        header(
            out,
            "mlapp_model_load_duration_seconds",
            "histogram",
            "Time to fetch, load and warm up a model.",
        );
        c.load_seconds
            .render(out, "mlapp_model_load_duration_seconds", "");
        let per_model = [
            (
                "mlapp_model_requests_in_flight",
                "Requests admitted to a model's engine and not yet answered.",
            ),
            (
                "mlapp_model_queue_depth",
                "Requests waiting in a model's batching queue.",
            ),
            (
                "mlapp_model_memory_estimate_bytes",
                "A model's estimated memory.",
            ),
        ];
        for (i, (series, help)) in per_model.iter().enumerate() {
            header(out, series, "gauge", help);
            for e in &loaded {
                let m = e.model();
                let v = match i {
                    0 => m.engine.in_flight() as u64,
                    1 => m.engine.queue_depth() as u64,
                    _ => e.bytes.load(Relaxed),
                };
                let _ = writeln!(out, "{series}{{model=\"{}\"}} {v}", escape(&e.name));
            }
        }
    }
}

pub(super) fn describe(e: &Entry) -> Described {
    let m = e.model();
    Described {
        model_name: e.name.clone(),
        model_url: e.url.clone(),
        version: e.version(),
        memory_estimate_bytes: e.bytes.load(Relaxed),
        invocations: e.invocations.load(Relaxed),
        loaded_at_unix: e
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        kind: m.plan.kind(),
        provider: m.provider,
    }
}
