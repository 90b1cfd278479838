//! Live data quality: each scored frame is added to a profile of the current window, one
//! profile per shard so that requests on different threads rarely meet on a lock; a window
//! closes after `rows` rows or `seconds` seconds and is checked against the baseline on the
//! monitor's own thread, never on a request's.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, TryLockError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use super::check::{self, Baseline, Columns, Evaluation, CHECKS};
use super::metrics::{escape, header};
use super::profile::{Profile, Sampler};
use crate::codec::frame::Column;
use crate::codec::{DecodeError, Frame};
use crate::model::output::Predictions;
use crate::model::signature::ModelSignature;
use crate::portal::results::Tally;

/// Shards for requests, at most; as many again (`MAX_PIECE_SHARDS` at most) for large inputs.
const MAX_SHARDS: usize = 8;
const MAX_PIECE_SHARDS: usize = 4;
/// Rows of a window sketched one by one; past them one row in 2^SAMPLE_LEVEL is, at that
/// weight (`profile::Sampler`). Counts and moments always see every value.
const EXACT_ROWS: u64 = 4096;
const SAMPLE_LEVEL: usize = 4;
/// Rows of small frames a shard gathers before profiling them (`Shard::pending`).
const BATCH_ROWS: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub rows: u64,
    pub seconds: u64,
}

/// What one shard has seen of the current window.
struct Shard {
    profile: Profile,
    tally: Tally,
    /// Whether this shard still sketches every row (the window is young).
    exact: bool,
    /// Rows of small float32 frames (online requests of a model with one float input) not yet
    /// profiled: profiled `BATCH_ROWS` at a time, a request's values cost a copy instead of a
    /// visit to every feature's profile. Profiled before the window is read or taken.
    pending: Vec<f32>,
    pending_rows: usize,
}

impl Shard {
    fn new(profile: Profile) -> Self {
        Self {
            profile,
            tally: Tally::default(),
            exact: true,
            pending: Vec::new(),
            pending_rows: 0,
        }
    }

    /// A frame profiled in this shard; `exact`: whether the window is still young enough to
    /// sketch every row.
    fn profile_frame(&mut self, frame: &Frame, signature: &ModelSignature, exact: bool) {
        if !exact && self.exact {
            self.profile
                .sampler_mut()
                .set_exact(false, fastrand::u64(..));
            self.exact = false;
        }
        self.profile.frame(frame, signature);
    }

    /// The pending rows profiled now.
    fn flush(&mut self, signature: &ModelSignature, exact: bool) {
        if self.pending_rows == 0 {
            return;
        }
        let frame = Frame {
            rows: std::mem::take(&mut self.pending_rows),
            columns: vec![Column::F32(std::mem::take(&mut self.pending))],
        };
        self.profile_frame(&frame, signature, exact);
        // The buffer is kept for the next rows.
        if let Some(Column::F32(mut v)) = frame.columns.into_iter().next() {
            v.clear();
            self.pending = v;
        }
    }
}

/// A closed window, checked.
#[derive(Serialize)]
pub struct Closed {
    pub started_at: String,
    pub ended_at: String,
    #[serde(skip)]
    pub statistics: super::files::Statistics,
    pub evaluation: Evaluation,
    pub predictions: Tally,
}

pub struct Monitor {
    model: Arc<str>,
    baseline: Option<Arc<Baseline>>,
    /// Where the baseline came from, for `/monitoring`.
    baseline_from: String,
    signature: ModelSignature,
    window: Window,
    /// The model's features named as the baseline names them (by name when they match, else
    /// by position).
    empty: Profile,
    /// `requests` shards for small frames (online requests), then those for the pieces of
    /// large inputs, so that a request never waits for a piece being profiled.
    shards: Vec<Mutex<Shard>>,
    requests: usize,
    rows: AtomicU64,
    opened: Mutex<(Instant, SystemTime)>,
    wake: (Mutex<bool>, Condvar),
    last: RwLock<Option<Arc<Closed>>>,
    windows: AtomicU64,
    /// Violations of closed windows, and rejected requests, by feature and check
    /// (`features.len() + 1` rows: the last is for checks of no one feature).
    violations: Vec<[AtomicU64; CHECKS.len()]>,
    events: Vec<[AtomicU64; CHECKS.len()]>,
}

fn counters(n: usize) -> Vec<[AtomicU64; CHECKS.len()]> {
    (0..n)
        .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
        .collect()
}

fn check_index(check: &str) -> usize {
    CHECKS.iter().position(|c| *c == check).unwrap_or(0)
}

fn iso(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::portal::view::iso(ms)
}

impl Monitor {
    /// A monitor of `signature`'s features, checked against `baseline` when there is one; its
    /// thread closes windows and lives as long as the monitor.
    pub fn start(
        model: Arc<str>,
        signature: &ModelSignature,
        baseline: Option<(Baseline, String)>,
        window: Window,
    ) -> Result<Arc<Monitor>, String> {
        let mut empty =
            Profile::of_model(signature).sampled(Sampler::after(u64::MAX, SAMPLE_LEVEL));
        if let Some((b, from)) = &baseline {
            let names = b.feature_names();
            let by_name = empty.features.iter().any(|f| names.contains(&f.name));
            if !by_name && names.len() == empty.features.len() {
                // A baseline of a headerless CSV (`_c0`, ...): its columns are the model's
                // features in order, as Model Monitor matches them.
                for (f, n) in empty.features.iter_mut().zip(names) {
                    f.name = n;
                }
            } else {
                let unknown: Vec<&str> = names
                    .iter()
                    .filter(|n| !empty.features.iter().any(|f| &f.name == *n))
                    .map(String::as_str)
                    .collect();
                if unknown.len() == names.len() {
                    return Err(format!(
                        "the baseline in {from} has none of the model's features (it has {}; \
                         the model takes: {})",
                        names.join(", "),
                        empty
                            .features
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if !unknown.is_empty() {
                    // A label or id column of the training data: not the model's, not checked.
                    log::warn!(
                        "monitoring: baseline columns the model does not take are not checked: {}",
                        unknown.join(", ")
                    );
                }
            }
        }
        let n = empty.features.len() + 1;
        let (baseline, baseline_from) = match baseline {
            Some((b, from)) => (Some(Arc::new(b)), from),
            None => (None, String::new()),
        };
        // One shard per CPU for requests and one per CPU for pieces (a 1 MiB piece of the
        // example model's rows takes about 0.4 ms to profile): each holds a sketch per feature
        // (tens of KiB), so more would cost memory without saving contention.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let requests = cpus.min(MAX_SHARDS);
        let shards = (0..requests + cpus.min(MAX_PIECE_SHARDS))
            .map(|_| Mutex::new(Shard::new(empty.empty_like())))
            .collect();
        let m = Arc::new(Monitor {
            model,
            baseline,
            baseline_from,
            signature: signature.clone(),
            window: Window {
                rows: window.rows.max(1),
                seconds: window.seconds.max(1),
            },
            empty,
            shards,
            requests,
            rows: AtomicU64::new(0),
            opened: Mutex::new((Instant::now(), SystemTime::now())),
            wake: (Mutex::new(false), Condvar::new()),
            last: RwLock::new(None),
            windows: AtomicU64::new(0),
            violations: counters(n),
            events: counters(n),
        });
        let weak = Arc::downgrade(&m);
        let spawned = std::thread::Builder::new()
            .name("mlapp-monitor".into())
            .spawn(move || run(weak));
        if let Err(e) = spawned {
            log::error!("monitoring: could not start its thread, windows will not close: {e}");
        }
        Ok(m)
    }

    fn shard(&self) -> &Mutex<Shard> {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) as usize
            };
        }
        let i = SHARD.with(|s| *s) % self.requests;
        &self.shards[i]
    }

    /// A piece of a large input, profiled in place on a piece shard that is free; when every
    /// one is busy, profiled apart and merged in, so that a piece never waits for another's
    /// profile. Returns the window's rows before it.
    fn piece(&self, frame: &Frame) -> u64 {
        let pieces = &self.shards[self.requests..];
        let free = || {
            pieces.iter().find_map(|s| match s.try_lock() {
                Ok(s) => Some(s),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            })
        };
        if let Some(mut s) = free() {
            let before = self.count(frame);
            s.profile_frame(frame, &self.signature, before < EXACT_ROWS);
            return before;
        }
        let mut mine = self.empty.empty_like();
        let exact = self.rows.load(Ordering::Relaxed) < EXACT_ROWS;
        mine.sampler_mut().set_exact(exact, fastrand::u64(..));
        mine.frame(frame, &self.signature);
        let mut s = free().unwrap_or_else(|| {
            let any = &pieces[fastrand::usize(..pieces.len())];
            any.lock().unwrap_or_else(|p| p.into_inner())
        });
        s.profile.merge(&mine);
        self.count(frame)
    }

    /// The frame's rows added to the window's count, by a caller that holds the lock of the
    /// shard the frame goes into: `take` holds every shard's lock while it resets the count, so
    /// a frame's rows and its count are in the same window. Returns the count before them.
    fn count(&self, frame: &Frame) -> u64 {
        self.rows.fetch_add(frame.rows as u64, Ordering::Relaxed)
    }

    /// A decoded frame of this model's features, about to be scored.
    pub fn frame(&self, frame: &Frame) {
        let before = if frame.rows > 64 {
            self.piece(frame)
        } else {
            let mut s = self.shard().lock().unwrap_or_else(|p| p.into_inner());
            let before = self.count(frame);
            let exact = before < EXACT_ROWS;
            match &frame.columns[..] {
                [Column::F32(v)] => {
                    s.pending.extend_from_slice(v);
                    s.pending_rows += frame.rows;
                    if s.pending_rows >= BATCH_ROWS {
                        s.flush(&self.signature, exact);
                    }
                }
                _ => s.profile_frame(frame, &self.signature, exact),
            }
            before
        };
        let n = frame.rows as u64;
        if before < self.window.rows && before + n >= self.window.rows {
            let (lock, cv) = &self.wake;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_one();
        }
    }

    pub fn predictions(&self, p: &Predictions) {
        let mut s = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        s.tally.add(p);
    }

    /// A request the model could not take: a data-quality event of the feature and check the
    /// error names.
    pub fn rejected(&self, e: &DecodeError) {
        let names = || self.empty.features.iter().map(|f| f.name.as_str());
        let (feature, check) = match e {
            // An empty cell where a number belongs is a missing value, not a wrong type.
            DecodeError::Value { feature, got, .. } if got == "\"\"" || got == "null" => {
                (names().position(|n| n == feature), check::COMPLETENESS)
            }
            DecodeError::Value { feature, .. } => {
                (names().position(|n| n == feature), check::DATA_TYPE)
            }
            DecodeError::MissingFeature { feature, .. } => {
                (names().position(|n| n == feature), check::MISSING_COLUMN)
            }
            DecodeError::UnknownFeature { .. } => (None, check::EXTRA_COLUMN),
            DecodeError::FeatureCount { expected, got, .. } if got < expected => {
                (None, check::MISSING_COLUMN)
            }
            DecodeError::FeatureCount { .. } => (None, check::EXTRA_COLUMN),
            _ => return,
        };
        let row = feature.unwrap_or(self.empty.features.len());
        self.events[row][check_index(check)].fetch_add(1, Ordering::Relaxed);
        // A refused value counts in the window too: against the type match, or as missing.
        if let Some(f) = feature {
            let mut s = self.shard().lock().unwrap_or_else(|p| p.into_inner());
            if let Some(fp) = s.profile.features.get_mut(f) {
                match check {
                    check::DATA_TYPE => fp.text += 1,
                    check::COMPLETENESS => fp.missing += 1,
                    _ => {}
                }
            }
        }
    }

    /// The current window so far: merged, not reset.
    fn snapshot(&self) -> (Profile, Tally) {
        let mut profile = self.empty.empty_like();
        let mut tally = Tally::default();
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            // Read under the shard's lock: a window taken meanwhile has reset the count.
            let exact = self.rows.load(Ordering::Relaxed) < EXACT_ROWS;
            s.flush(&self.signature, exact);
            profile.merge(&s.profile);
            tally.merge(&s.tally);
        }
        (profile, tally)
    }

    /// Takes the current window and opens the next.
    fn take(&self) -> (Profile, Tally, SystemTime) {
        let started_at = {
            let mut o = self.opened.lock().unwrap_or_else(|p| p.into_inner());
            let at = o.1;
            *o = (Instant::now(), SystemTime::now());
            at
        };
        // Every shard held while the count is reset (in index order, as no other caller holds
        // two): frames count their rows under their shard's lock, so each frame's rows and its
        // count are both in this window or both in the next, whose shards start by sketching
        // every row.
        let mut held: Vec<_> = (self.shards.iter())
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let exact = self.rows.swap(0, Ordering::Relaxed) < EXACT_ROWS;
        let taken: Vec<_> = (held.iter_mut())
            .map(|s| {
                // Pending rows belong to the window being taken.
                s.flush(&self.signature, exact);
                s.exact = true;
                (
                    std::mem::replace(&mut s.profile, self.empty.empty_like()),
                    std::mem::take(&mut s.tally),
                )
            })
            .collect();
        drop(held);
        let mut profile = self.empty.empty_like();
        let mut tally = Tally::default();
        for (p, t) in &taken {
            profile.merge(p);
            tally.merge(t);
        }
        (profile, tally, started_at)
    }

    fn evaluate(&self, profile: &Profile) -> Option<Evaluation> {
        let b = self.baseline.as_ref()?;
        Some(check::evaluate(
            b,
            profile,
            Columns {
                count: profile.features.len(),
                ..Columns::default()
            },
        ))
    }

    fn close(&self) {
        let (profile, tally, started_at) = self.take();
        if profile.rows == 0 {
            return;
        }
        let statistics = profile.statistics();
        let Some(evaluation) = self.evaluate(&profile) else {
            self.windows.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for v in &evaluation.violations.violations {
            let row = self
                .empty
                .features
                .iter()
                .position(|f| f.name == v.feature_name)
                .unwrap_or(self.empty.features.len());
            self.violations[row][check_index(&v.constraint_check_type)]
                .fetch_add(1, Ordering::Relaxed);
        }
        if !evaluation.violations.violations.is_empty() {
            log::warn!(
                "monitoring {}: {} violation(s) in a window of {} rows: {}",
                self.model,
                evaluation.violations.violations.len(),
                evaluation.rows,
                evaluation
                    .violations
                    .violations
                    .iter()
                    .map(|v| format!("{} {}", v.feature_name, v.constraint_check_type))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let closed = Closed {
            started_at: iso(started_at),
            ended_at: iso(SystemTime::now()),
            statistics,
            evaluation,
            predictions: tally,
        };
        *self.last.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(closed));
        self.windows.fetch_add(1, Ordering::Release);
    }

    /// Closes the current window now: the end of a transform is the end of its last window.
    pub fn close_now(&self) {
        self.close();
    }

    fn due(&self) -> Option<Duration> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner()).0;
        let left = Duration::from_secs(self.window.seconds).checked_sub(opened.elapsed());
        if self.rows.load(Ordering::Relaxed) >= self.window.rows {
            return None;
        }
        left
    }

    /// `GET /monitoring`.
    pub fn view(&self) -> Value {
        let (profile, tally) = self.snapshot();
        let started_at = iso(self.opened.lock().unwrap_or_else(|p| p.into_inner()).1);
        let evaluation = self.evaluate(&profile);
        // The count first: a window counted closed is then always the `last` shown (close()
        // sets `last` before it counts, with Release).
        let windows_closed = self.windows.load(Ordering::Acquire);
        let last = self.last.read().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "model": &*self.model,
            "baseline": (!self.baseline_from.is_empty()).then_some(&self.baseline_from),
            "window": {"rows": self.window.rows, "seconds": self.window.seconds},
            "windows_closed": windows_closed,
            "current": {
                "started_at": started_at,
                "rows": profile.rows,
                "statistics": profile.statistics(),
                "violations": evaluation.as_ref().map(|e| &e.violations.violations),
                "features": evaluation.as_ref().map(|e| &e.features),
                "predictions": tally,
            },
            "last": last.as_deref().map(|c| json!({
                "started_at": c.started_at,
                "ended_at": c.ended_at,
                "rows": c.evaluation.rows,
                "statistics": c.statistics,
                "violations": c.evaluation.violations.violations,
                "features": c.evaluation.features,
                "predictions": c.predictions,
            })),
            "rejected": self.rejections(),
        })
    }

    fn rejections(&self) -> Value {
        let mut out = Vec::new();
        for (i, row) in self.events.iter().enumerate() {
            for (c, n) in row.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    out.push(json!({"feature": self.feature_label(i), "check": CHECKS[c], "requests": n}));
                }
            }
        }
        Value::Array(out)
    }

    fn feature_label(&self, row: usize) -> &str {
        self.empty.features.get(row).map_or("", |f| f.name.as_str())
    }

    /// The Prometheus series: per feature, the last closed window's drift distance and
    /// completeness, and counters of violations and rejected requests by check.
    pub fn render(&self, out: &mut String) {
        let model = escape(&self.model);
        for (name, kind, help, v) in [
            (
                "mlapp_monitoring_windows_total",
                "counter",
                "Monitoring windows closed.",
                self.windows.load(Ordering::Acquire),
            ),
            (
                "mlapp_monitoring_window_rows",
                "gauge",
                "Rows in the monitoring window so far.",
                self.rows.load(Ordering::Relaxed),
            ),
        ] {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name}{{model=\"{model}\"}} {v}");
        }
        let last = self.last.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = &last {
            type Figure = fn(&check::FeatureCheck) -> Option<f64>;
            let figures: [(&str, &str, Figure); 3] = [
                (
                    "mlapp_feature_drift_distance",
                    "The last window's distance to the baseline (L-infinity, after the Robust correction).",
                    |f| f.distance,
                ),
                (
                    "mlapp_feature_drift_threshold",
                    "The threshold the drift distance is held to.",
                    |f| Some(f.threshold),
                ),
                (
                    "mlapp_feature_completeness",
                    "The last window's share of present values.",
                    |f| Some(f.completeness),
                ),
            ];
            for (name, help, figure) in figures {
                header(out, name, "gauge", help);
                for f in &c.evaluation.features {
                    if let Some(v) = figure(f) {
                        let feature = escape(&f.name);
                        let _ =
                            writeln!(out, "{name}{{model=\"{model}\",feature=\"{feature}\"}} {v}");
                    }
                }
            }
            let name = "mlapp_prediction_label_share";
            header(
                out,
                name,
                "gauge",
                "The last window's share of each predicted label.",
            );
            for (label, share) in c.predictions.shares() {
                let label = escape(&label);
                let _ = writeln!(out, "{name}{{model=\"{model}\",label=\"{label}\"}} {share}");
            }
        }
        for (name, help, rows) in [
            (
                "mlapp_feature_violations_total",
                "Violations found in closed monitoring windows.",
                &self.violations,
            ),
            (
                "mlapp_data_quality_events_total",
                "Requests refused for their data, by the feature and check they fail.",
                &self.events,
            ),
        ] {
            header(out, name, "counter", help);
            for (i, row) in rows.iter().enumerate() {
                for (c, n) in row.iter().enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{model=\"{model}\",feature=\"{}\",check=\"{}\"}} {n}",
                            escape(self.feature_label(i)),
                            CHECKS[c]
                        );
                    }
                }
            }
        }
    }
}

/// The monitor's thread: sleeps until the window is due by time or woken by rows, closes it,
/// and ends when the monitor is dropped (a reload replaced the model).
fn run(monitor: Weak<Monitor>) {
    loop {
        let Some(m) = monitor.upgrade() else { return };
        match m.due() {
            None => m.close(),
            Some(left) => {
                let (lock, cv) = &m.wake;
                let woken = lock.lock().unwrap_or_else(|p| p.into_inner());
                // At most a second at a time, so a dropped monitor's thread ends soon.
                let wait = left.min(Duration::from_secs(1));
                let (mut woken, _) = cv
                    .wait_timeout_while(woken, wait, |w| !*w)
                    .unwrap_or_else(|p| p.into_inner());
                *woken = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_sig;

    /// Each feature's counts, bounds and sketch size, as text to compare.
    fn counts(p: &Profile) -> Vec<String> {
        p.features
            .iter()
            .map(|f| {
                let m = &f.moments;
                let (a, b, c, d) = (f.missing, f.numbers, f.integral, f.fractional);
                format!(
                    "{a} {b} {c} {d} {} {} {} {}",
                    m.n,
                    f.kll.count(),
                    m.min,
                    m.max
                )
            })
            .collect()
    }

    /// A monitor whose window does not close during a test.
    fn open_window(sig: &ModelSignature) -> Arc<Monitor> {
        let window = Window {
            rows: 1_000_000,
            seconds: 3600,
        };
        Monitor::start("m".into(), sig, None, window).unwrap()
    }

    /// Rows `from..from + rows` of three features: x, x / 4 (missing in every third row), -x.
    fn rows_of(from: usize, rows: usize) -> Frame {
        let mut v = Vec::with_capacity(rows * 3);
        for r in from..from + rows {
            let x = r as f32;
            v.extend([x, if r % 3 == 0 { f32::NAN } else { x / 4.0 }, -x]);
        }
        Frame {
            rows,
            columns: vec![Column::F32(v)],
        }
    }

    /// One-row requests' rows, gathered per shard, are all in the window when it is read and
    /// when it is taken, counted as a profile fed the same rows one by one counts them.
    #[test]
    fn gathered_rows_are_profiled_before_the_window_is_read_or_taken() {
        let sig = test_sig::tensor3();
        let m = open_window(&sig);
        let feed = |rows: usize| {
            let mut direct = Profile::of_model(&sig);
            for r in 0..rows {
                let frame = rows_of(r, 1);
                m.frame(&frame);
                direct.frame(&frame, &sig);
            }
            direct
        };
        // Taken with rows still pending.
        let rows = BATCH_ROWS * 3 + 5;
        let direct = feed(rows);
        let (taken, _, _) = m.take();
        assert_eq!(taken.rows, rows as u64);
        assert_eq!(counts(&taken), counts(&direct));
        // Read with rows pending, then taken: the same rows, once.
        let rows = BATCH_ROWS + 7;
        let direct = feed(rows);
        let (read, _) = m.snapshot();
        assert_eq!(read.rows, rows as u64);
        assert_eq!(counts(&read), counts(&direct));
        let (taken, _, _) = m.take();
        assert_eq!(counts(&taken), counts(&direct));
        assert_eq!(m.snapshot().0.rows, 0);
    }

    /// Pieces of large inputs go to their own shards, in place, and are in the window once,
    /// with the count of their rows, whether a piece shard was free or all were busy.
    #[test]
    fn pieces_are_profiled_once_whether_a_piece_shard_is_free_or_not() {
        let sig = test_sig::tensor3();
        let m = open_window(&sig);
        let mut direct = Profile::of_model(&sig);
        for (from, rows) in [(0, 100), (100, 700), (800, 65)] {
            let frame = rows_of(from, rows);
            m.frame(&frame);
            direct.frame(&frame, &sig);
        }
        let (read, _) = m.snapshot();
        assert_eq!(read.rows, 865);
        assert_eq!(counts(&read), counts(&direct));
        // Every piece shard busy: the piece is profiled apart and merged in once one is free.
        let held: Vec<_> = (m.shards[m.requests..].iter())
            .map(|s| s.lock().unwrap())
            .collect();
        let frame = rows_of(865, 300);
        direct.frame(&frame, &sig);
        let worker = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.frame(&frame))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !worker.is_finished(),
            "the piece did not wait for a piece shard"
        );
        drop(held);
        worker.join().unwrap();
        let (taken, _, _) = m.take();
        assert_eq!(taken.rows, 1165);
        assert_eq!(counts(&taken), counts(&direct));
        // Request shards saw none of it.
        for s in &m.shards[..m.requests] {
            assert_eq!(s.lock().unwrap().profile.rows, 0);
        }
        assert_eq!(m.rows.load(Ordering::Relaxed), 0);
    }
}
