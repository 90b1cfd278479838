//! A shadow challenger: a second model scores a sampled share of live requests after the
//! served model has answered, and the two answers are compared (agreement, label flips, score
//! deltas). The shadow's answers are never returned.
//!
//! Nothing of it runs before the answer is sent, and nothing of it can fail the request: the
//! request path only samples and hands over shared bytes and the served model's outputs. At
//! most `MAX_IN_FLIGHT` shadow requests wait or run at once (more are skipped and counted),
//! on the shadow's own thread and session at the lowest CPU priority, bounded by its timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::capture::{Capture, Payload, Record};
use super::metrics::{counter, escape, header, Histogram};
use crate::codec::{self, InputFormat, OutputFormat};
use crate::engine::LoadedModel;
use crate::model::{Label, OutputPlan, Outputs, Predictions};

/// Shadow requests that may run at once; past it, requests are not shadowed.
const MAX_IN_FLIGHT: usize = 64;
/// Label pairs kept apart in the flips table; the rest are summed as `other`.
const MAX_FLIP_PAIRS: usize = 64;
/// Two regression values agree when they differ by at most this share of the served one
/// (or by this much near zero).
const REGRESSION_AGREEMENT: f64 = 1e-3;
/// Buckets of |score delta|.
const DELTAS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

pub struct Shadow {
    model: Arc<LoadedModel>,
    percent: f64,
    timeout: Duration,
    /// Where the shadow's answers go (its own variant), when capture is on.
    capture: Option<Arc<Capture>>,
    running: Arc<tokio::sync::Semaphore>,
    /// To the shadow's own thread, which does all of its work at the lowest CPU priority.
    queue: std::sync::mpsc::SyncSender<(Offer, tokio::sync::OwnedSemaphorePermit)>,
    stats: Stats,
}

#[derive(Default)]
struct Tally {
    rows: u64,
    agreed: u64,
    flips: BTreeMap<(String, String), u64>,
    delta_sum: f64,
    delta_abs_sum: f64,
    delta_sq_sum: f64,
    delta_abs_max: f64,
}

struct Stats {
    compared: AtomicU64,
    busy: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
    incomparable: AtomicU64,
    tally: Mutex<Tally>,
    deltas: Histogram,
    seconds: Histogram,
}

/// What the request path hands over for one shadowed request.
pub struct Offer {
    pub body: bytes::Bytes,
    pub format: InputFormat,
    pub accept: OutputFormat,
    /// How the served model's raw outputs for this body become predictions, and the outputs.
    pub plan: OutputPlan,
    pub outputs: Outputs,
    /// The served answer's capture, when this request was captured: the shadow's answer is
    /// captured with the same inference id.
    pub captured: Option<CaptureLink>,
}

/// A sampled request's place among the shadow's runs.
pub struct Turn {
    shadow: Arc<Shadow>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Turn {
    /// Starts the shadow's run of the answered request, after the answer. Never blocks and
    /// never fails.
    pub fn offer(self, offer: Offer) {
        let Turn { shadow, permit } = self;
        // The permit bounds the queue: a place is always free.
        if shadow.queue.try_send((offer, permit)).is_err() {
            shadow.stats.failed.fetch_add(1, Relaxed);
        }
    }
}

pub struct CaptureLink {
    pub input_type: Arc<str>,
    pub inference_id: String,
}

/// `GET /monitoring`'s `shadow` section.
#[derive(Serialize)]
pub struct View {
    pub model: String,
    pub percent: f64,
    pub requests: BTreeMap<&'static str, u64>,
    pub rows: u64,
    pub agreement_rate: Option<f64>,
    pub label_flips: Vec<Flip>,
    pub score_delta: Option<Deltas>,
}

#[derive(Serialize)]
pub struct Flip {
    pub from: String,
    pub to: String,
    pub rows: u64,
}

/// The shadow's score minus the served model's: the probability both give the served
/// model's label, or the regression value.
#[derive(Serialize)]
pub struct Deltas {
    pub mean: f64,
    pub mean_abs: f64,
    pub rms: f64,
    pub max_abs: f64,
}

impl Shadow {
    /// The shadow and its thread: decode, inference (on the model's own thread) and the
    /// comparison all run at nice 19, so that busy CPUs serve the answers first.
    pub fn start(
        model: Arc<LoadedModel>,
        percent: f64,
        timeout: Duration,
        capture: Option<Arc<Capture>>,
    ) -> std::io::Result<Arc<Self>> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(MAX_IN_FLIGHT);
        let shadow = Arc::new(Self {
            model,
            percent,
            timeout,
            capture,
            running: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            queue,
            stats: Stats {
                compared: AtomicU64::new(0),
                busy: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                incomparable: AtomicU64::new(0),
                tally: Mutex::new(Tally::default()),
                deltas: Histogram::new(DELTAS),
                seconds: Histogram::new(super::metrics::SECONDS),
            },
        });
        let weak = Arc::downgrade(&shadow);
        std::thread::Builder::new()
            .name("mlapp-shadow".into())
            .spawn(move || {
                crate::engine::lowest_priority();
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                else {
                    return log::error!("the shadow cannot start its runtime; it scores nothing");
                };
                while let Ok((offer, permit)) = jobs.recv() {
                    let Some(shadow) = weak.upgrade() else {
                        return;
                    };
                    rt.block_on(shadow.run(offer));
                    drop(permit);
                }
            })?;
        Ok(shadow)
    }

    /// Writes out the shadow's captured answers (at shutdown); false when some are left.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.capture.as_ref().is_none_or(|c| c.flush(timeout))
    }

    /// A place for this request among the shadow's runs, when it is sampled and one of the
    /// `MAX_IN_FLIGHT` places is free; asked before anything is kept or copied for it.
    pub fn begin(self: &Arc<Self>) -> Option<Turn> {
        let sampled =
            self.percent >= 100.0 || (self.percent > 0.0 && fastrand::f64() * 100.0 < self.percent);
        if !sampled {
            return None;
        }
        match Arc::clone(&self.running).try_acquire_owned() {
            Ok(permit) => Some(Turn {
                shadow: Arc::clone(self),
                permit,
            }),
            Err(_) => {
                self.stats.busy.fetch_add(1, Relaxed);
                None
            }
        }
    }

    async fn run(&self, offer: Offer) {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let Ok(ticket) = self.model.engine.admit() else {
            self.stats.busy.fetch_add(1, Relaxed);
            return;
        };
        // The shadow's input is the body, read against its own signature, so a challenger may
        // take other features than the served model.
        let frame = match codec::decode(offer.format, &offer.body, &self.model.signature) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("shadow {}: refused the input: {e}", self.model.name);
                self.stats.refused.fetch_add(1, Relaxed);
                return;
            }
        };
        let scored = tokio::time::timeout_at(
            deadline.into(),
            self.model.score_on_workers(&ticket, frame, deadline),
        )
        .await;
        let outputs = match scored {
            Ok(Ok(s)) => s.outputs,
            Ok(Err(crate::engine::EngineError::DeadlineExceeded)) | Err(_) => {
                self.stats.timed_out.fetch_add(1, Relaxed);
                return;
            }
            Ok(Err(e)) => {
                log::debug!("shadow {}: {e}", self.model.name);
                self.stats.failed.fetch_add(1, Relaxed);
                return;
            }
        };
        drop(ticket);
        self.stats.seconds.observe_duration(started.elapsed());
        self.compare(offer, outputs);
    }

    fn compare(&self, offer: Offer, shadow_outputs: Outputs) {
        let (Ok(served), Ok(shadow)) = (
            offer.plan.apply(offer.outputs),
            self.model.plan.apply(shadow_outputs),
        ) else {
            self.stats.failed.fetch_add(1, Relaxed);
            return;
        };
        if let (Some(c), Some(link)) = (&self.capture, &offer.captured) {
            c.record(Record {
                input: Some(Payload {
                    content_type: Arc::clone(&link.input_type),
                    data: offer.body.clone(),
                }),
                output: Some(Payload {
                    content_type: Arc::from(offer.accept.mime()),
                    data: codec::encode(&shadow, offer.accept).into(),
                }),
                inference_id: Some(link.inference_id.clone()),
                time: std::time::SystemTime::now(),
            });
        }
        let rows = served.rows();
        if shadow.rows() != rows {
            self.stats.incomparable.fetch_add(1, Relaxed);
            return;
        }
        let mut t = self.stats.tally.lock().unwrap_or_else(|p| p.into_inner());
        let before = t.rows;
        match (&served, &shadow) {
            (
                Predictions::Classifier {
                    labels: a,
                    classes: ca,
                    probabilities: pa,
                    ..
                },
                Predictions::Classifier {
                    labels: b,
                    classes: cb,
                    probabilities: pb,
                    ..
                },
            ) => {
                for r in 0..rows {
                    let (la, lb) = (label_text(&a[r]), label_text(&b[r]));
                    t.rows += 1;
                    if la == lb {
                        t.agreed += 1;
                    } else {
                        let n = t.flips.len();
                        let key = if n < MAX_FLIP_PAIRS
                            || t.flips.contains_key(&(la.clone(), lb.clone()))
                        {
                            (la.clone(), lb)
                        } else {
                            ("other".to_string(), "other".to_string())
                        };
                        *t.flips.entry(key).or_insert(0) += 1;
                    }
                    // The probability each gives the served model's label.
                    let p = |classes: &[String], probs: &[f32]| {
                        let k = classes.iter().position(|c| *c == la)?;
                        probs.get(r * classes.len() + k).map(|&p| f64::from(p))
                    };
                    if let (Some(x), Some(y)) = (p(ca, pa), p(cb, pb)) {
                        self.delta(&mut t, y - x);
                    }
                }
            }
            (
                Predictions::Regressor { values: a, .. },
                Predictions::Regressor { values: b, .. },
            ) => {
                for (x, y) in a.iter().zip(b) {
                    t.rows += 1;
                    if (y - x).abs() <= REGRESSION_AGREEMENT * x.abs().max(1.0) {
                        t.agreed += 1;
                    }
                    self.delta(&mut t, y - x);
                }
            }
            _ => {
                drop(t);
                self.stats.incomparable.fetch_add(1, Relaxed);
                return;
            }
        }
        debug_assert!(t.rows >= before);
        drop(t);
        self.stats.compared.fetch_add(1, Relaxed);
    }

    fn delta(&self, t: &mut Tally, d: f64) {
        if !d.is_finite() {
            return;
        }
        t.delta_sum += d;
        t.delta_abs_sum += d.abs();
        t.delta_sq_sum += d * d;
        t.delta_abs_max = t.delta_abs_max.max(d.abs());
        self.stats.deltas.observe(d.abs());
    }

    fn requests(&self) -> BTreeMap<&'static str, u64> {
        let s = &self.stats;
        [
            ("compared", &s.compared),
            ("skipped_busy", &s.busy),
            ("refused_input", &s.refused),
            ("timed_out", &s.timed_out),
            ("failed", &s.failed),
            ("incomparable", &s.incomparable),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Relaxed)))
        .collect()
    }

    pub fn view(&self) -> View {
        let t = self.stats.tally.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.stats.deltas.count() as f64;
        View {
            model: self.model.source.file.display().to_string(),
            percent: self.percent,
            requests: self.requests(),
            rows: t.rows,
            agreement_rate: (t.rows > 0).then(|| t.agreed as f64 / t.rows as f64),
            label_flips: t
                .flips
                .iter()
                .map(|((from, to), &rows)| Flip {
                    from: from.clone(),
                    to: to.clone(),
                    rows,
                })
                .collect(),
            score_delta: (n > 0.0).then(|| Deltas {
                mean: t.delta_sum / n,
                mean_abs: t.delta_abs_sum / n,
                rms: (t.delta_sq_sum / n).sqrt(),
                max_abs: t.delta_abs_max,
            }),
        }
    }

    /// The shadow's series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let name = "mlapp_shadow_requests_total";
        header(
            out,
            name,
            "counter",
            "Requests offered to the shadow model, by what became of them.",
        );
        for (outcome, n) in self.requests() {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
        }
        let t = self.stats.tally.lock().unwrap_or_else(|p| p.into_inner());
        counter(
            out,
            "mlapp_shadow_rows_total",
            "Rows scored by both models and compared.",
            t.rows,
        );
        counter(out, "mlapp_shadow_rows_agreed_total", "Compared rows where both models gave the same label (or regression values within 0.1 %).", t.agreed);
        let name = "mlapp_shadow_label_flips_total";
        header(out, name, "counter", "Compared rows whose label the shadow changed, by the served label (from) and the shadow's (to).");
        for ((from, to), n) in &t.flips {
            let _ = writeln!(
                out,
                "{name}{{from=\"{}\",to=\"{}\"}} {n}",
                escape(from),
                escape(to)
            );
        }
        drop(t);
        header(out, "mlapp_shadow_score_delta_abs", "histogram", "Per row, |shadow score - served score| (the probability of the served label, or the regression value).");
        self.stats
            .deltas
            .render(out, "mlapp_shadow_score_delta_abs", "");
        header(
            out,
            "mlapp_shadow_duration_seconds",
            "histogram",
            "Time from a shadow run's start to its outputs (decode, queue and inference).",
        );
        self.stats
            .seconds
            .render(out, "mlapp_shadow_duration_seconds", "");
    }
}

fn label_text(l: &Label) -> String {
    match l {
        Label::Int(i) => i.to_string(),
        Label::Str(s) => s.clone(),
    }
}
