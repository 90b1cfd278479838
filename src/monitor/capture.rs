//! Prediction capture in SageMaker Data Capture's layout: one JSON object per line, in files
//! under `{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/`, so that Model Monitor tooling (and
//! anything else that reads SageMaker's capture files) reads ours unchanged.
//!
//! The request path only samples and moves the payloads (reference-counted `Bytes`) into a
//! queue bounded in bytes; a writer thread serializes, writes and rolls the files, and for S3
//! an uploader thread ships the closed ones. A slow disk or S3 costs counted drops, never
//! request latency.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::storage::{S3Options, S3Store, S3Uri};

/// Counted against `queue_bytes` on top of the payloads, so that a flood of empty bodies is
/// bounded too.
const RECORD_OVERHEAD: usize = 128;
/// Records queued before the writer is woken; below that it finds them on its own within
/// `COLLECT`.
const WAKE_RECORDS: usize = 256;
const COLLECT: Duration = Duration::from_millis(25);
const HOUR_MS: i64 = 3_600_000;
/// The longest a written line waits in the writer's buffer while records keep arriving.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);
const UPLOAD_ATTEMPTS: u32 = 4;
const BACKOFF: Duration = if cfg!(test) {
    Duration::from_millis(1)
} else {
    Duration::from_millis(500)
};
/// Drop must not hold shutdown for long; a caller that wants every upload flushes itself.
const DROP_FLUSH: Duration = Duration::from_secs(2);
/// Payloads up to this size are copied into a queued record's buffer (`Queued`); larger ones
/// (pieces of a large input) are shared, as a copy would cost more than their allocation.
const COPY_AT_MOST: usize = 4 << 10;
/// Buffers kept for reuse, and the largest one kept: the pool and the writer's buffers on
/// their way back to it hold at most 4 MiB each, beyond what the queue counts.
const POOL_BUFFERS: usize = 512;
const POOL_CAPACITY: usize = 8 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMode {
    Input,
    Output,
    Both,
}

impl CaptureMode {
    fn input(self) -> bool {
        self != CaptureMode::Output
    }
    fn output(self) -> bool {
        self != CaptureMode::Input
    }
}

impl FromStr for CaptureMode {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, CaptureError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "input" => Ok(CaptureMode::Input),
            "output" => Ok(CaptureMode::Output),
            "both" => Ok(CaptureMode::Both),
            _ => Err(CaptureError::Mode(s.to_string())),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// A local folder or `s3://bucket/prefix`.
    pub uri: String,
    /// 0..=100; SageMaker's SDK defaults to 20.
    pub percent: f64,
    pub mode: CaptureMode,
    pub endpoint: String,
    pub variant: String,
    /// Media types (parameters ignored, case-insensitive) stored as `CSV` / `JSON` text.
    pub csv_types: Vec<String>,
    pub json_types: Vec<String>,
    /// A file is closed this long after it was opened, at this size, and at every UTC hour of
    /// the records' inference time.
    pub roll_seconds: u64,
    pub roll_bytes: u64,
    /// Payload bytes that may wait for the writer; records beyond it are dropped and counted.
    pub queue_bytes: usize,
    pub s3: S3Options,
    /// For S3: where files are written before upload (default: a new temporary folder).
    pub spool: Option<PathBuf>,
}

impl CaptureConfig {
    /// SageMaker's defaults: 20 %, both directions, `AllTraffic`, `text/csv` and
    /// `application/json`; files of at most a minute or 64 MiB, 64 MiB of queue.
    pub fn new(uri: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            percent: 20.0,
            mode: CaptureMode::Both,
            endpoint: endpoint.into(),
            variant: "AllTraffic".into(),
            csv_types: vec!["text/csv".into()],
            json_types: vec!["application/json".into()],
            roll_seconds: 60,
            roll_bytes: 64 << 20,
            queue_bytes: 64 << 20,
            s3: S3Options::default(),
            spool: None,
        }
    }
}

pub struct Payload {
    /// Shared with the `Tap` it came from: a captured request copies no text.
    pub content_type: Arc<str>,
    pub data: bytes::Bytes,
}

pub struct Record {
    pub input: Option<Payload>,
    pub output: Option<Payload>,
    pub inference_id: Option<String>,
    pub time: SystemTime,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Records accepted into the queue.
    pub captured: u64,
    /// Lines in closed (visible) files.
    pub written: u64,
    pub dropped_full: u64,
    pub dropped_error: u64,
    /// Files closed.
    pub files: u64,
    /// Files whose upload failed every attempt; they stay in the spool.
    pub upload_failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("--capture-percent must be between 0 and 100, got {0}")]
    Percent(f64),
    #[error("--capture-mode must be input, output or both, got {0:?}")]
    Mode(String),
    #[error("{flag} must be one path segment (not empty, no '/' or '\\', not '.' or '..'), got {value:?}")]
    Segment { flag: &'static str, value: String },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("--capture-uri: {0}")]
    Uri(String),
    #[error("--capture-uri: cannot create {}: {source}", path.display())]
    Folder { path: PathBuf, source: io::Error },
    #[error("capture: cannot start {what}: {source}")]
    Start {
        what: &'static str,
        source: io::Error,
    },
}

pub struct Capture {
    shared: Arc<Shared>,
    mode: CaptureMode,
    percent: f64,
    queue_bytes: usize,
    writer: Option<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
    /// A spool this capture made itself, removed on drop when nothing is left in it.
    temp_spool: Option<PathBuf>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Emptied buffers of written records, for the next ones (`Queued`).
    pool: Mutex<Vec<Vec<u8>>>,
    wake: Condvar,
    /// The highest flush ticket whose records are all written (and uploaded).
    done: Mutex<u64>,
    done_cond: Condvar,
    in_flight: AtomicUsize,
    stats: Counters,
    /// When the queue-full warning was last logged.
    last_full_warn: Mutex<Option<Instant>>,
    /// Held by a test to stall the writer as a blocked disk would.
    #[cfg(test)]
    gate: Mutex<()>,
}

#[derive(Default)]
struct Counters {
    captured: AtomicU64,
    written: AtomicU64,
    dropped_full: AtomicU64,
    dropped_error: AtomicU64,
    files: AtomicU64,
    upload_failures: AtomicU64,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Msg>,
    ticket: u64,
    stop: bool,
}

enum Msg {
    Rec(Queued, usize),
    Flush(u64),
}

/// A record as the writer gets it. Small payloads, their content types and the inference id
/// are copied into one buffer from a pool that the writer refills. The caller's own
/// allocations are then freed by the thread that made them, and the buffers go round between
/// the threads: allocating on a request's thread and freeing on the writer's made glibc's
/// allocator a measurable part of every captured request. Large payloads are shared as they
/// are, and a buffer grown past `POOL_CAPACITY` is freed by the writer.
struct Queued {
    buf: Vec<u8>,
    input: Option<Part>,
    output: Option<Part>,
    inference_id: Option<Range<usize>>,
    time: SystemTime,
}

struct Part {
    content_type: Range<usize>,
    data: Data,
}

enum Data {
    Copied(Range<usize>),
    Shared(bytes::Bytes),
}

impl Queued {
    fn pack(rec: Record, mut buf: Vec<u8>) -> Self {
        fn put(buf: &mut Vec<u8>, b: &[u8]) -> Range<usize> {
            let start = buf.len();
            buf.extend_from_slice(b);
            start..buf.len()
        }
        let mut part = |p: Payload| Part {
            content_type: put(&mut buf, p.content_type.as_bytes()),
            data: if p.data.len() <= COPY_AT_MOST {
                Data::Copied(put(&mut buf, &p.data))
            } else {
                Data::Shared(p.data)
            },
        };
        let (input, output) = (rec.input.map(&mut part), rec.output.map(&mut part));
        let inference_id = rec.inference_id.map(|id| put(&mut buf, id.as_bytes()));
        Queued {
            buf,
            input,
            output,
            inference_id,
            time: rec.time,
        }
    }

    /// Text the record copied from a `&str`, as bytes: it is escaped by `push_json_text`,
    /// whose pass checks the UTF-8 again anyway.
    fn text(&self, r: &Range<usize>) -> &[u8] {
        self.buf.get(r.clone()).unwrap_or_default()
    }

    fn data<'a>(&'a self, d: &'a Data) -> &'a [u8] {
        match d {
            Data::Copied(r) => self.buf.get(r.clone()).unwrap_or_default(),
            Data::Shared(b) => b,
        }
    }
}

impl Shared {
    fn mark_done(&self, ticket: u64) {
        let mut done = lock(&self.done);
        *done = (*done).max(ticket);
        self.done_cond.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type UploadFn = Box<dyn FnMut(&Path, &S3Uri) -> Result<(), String> + Send>;

impl Capture {
    pub fn start(cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        Self::launch(cfg, None)
    }

    /// `upload` stands in for S3 in tests; None uploads with the AWS SDK.
    fn launch(cfg: CaptureConfig, upload: Option<UploadFn>) -> Result<Capture, CaptureError> {
        if !(0.0..=100.0).contains(&cfg.percent) {
            return Err(CaptureError::Percent(cfg.percent));
        }
        for (flag, value) in [
            ("--capture-endpoint", &cfg.endpoint),
            ("--capture-variant", &cfg.variant),
        ] {
            if value.is_empty() || value.contains(['/', '\\']) || value == "." || value == ".." {
                let value = value.clone();
                return Err(CaptureError::Segment { flag, value });
            }
        }
        for (flag, value) in [
            ("--capture-roll-seconds", cfg.roll_seconds),
            ("--capture-roll-bytes", cfg.roll_bytes),
            ("--capture-queue-bytes", cfg.queue_bytes as u64),
        ] {
            if value == 0 {
                return Err(CaptureError::Zero(flag));
            }
        }
        let start_err = |what| move |source| CaptureError::Start { what, source };
        let (root, target, temp_spool) = match S3Uri::parse(&cfg.uri) {
            Some(Err(e)) => return Err(CaptureError::Uri(e.to_string())),
            Some(Ok(uri)) => match &cfg.spool {
                Some(spool) => (spool.clone(), Some(uri), None),
                None => {
                    let dir = tempfile::Builder::new()
                        .prefix("mlapp-capture-")
                        .tempdir()
                        .map_err(start_err("a spool folder"))?
                        .keep();
                    (dir.clone(), Some(uri), Some(dir))
                }
            },
            None if cfg.uri.trim().is_empty() => {
                return Err(CaptureError::Uri("a folder or s3://bucket/prefix".into()))
            }
            None => (PathBuf::from(&cfg.uri), None, None),
        };
        fs::create_dir_all(&root).map_err(|source| CaptureError::Folder {
            path: root.clone(),
            source,
        })?;
        let shared = Arc::new(Shared::default());
        let mut uploader = None;
        let mut up = None;
        if let Some(prefix) = target {
            let upload = match upload {
                Some(f) => f,
                None => s3_upload(cfg.s3.clone()).map_err(start_err("an S3 runtime"))?,
            };
            let (tx, rx) = mpsc::channel();
            let sh = shared.clone();
            let handle = thread::Builder::new()
                .name("mlapp-capture-upload".into())
                .spawn(move || upload_loop(&sh, rx, upload))
                .map_err(start_err("the uploader thread"))?;
            uploader = Some(handle);
            up = Some((tx, prefix));
        }
        let media = |types: &[String]| {
            (types.iter())
                .map(|t| t.split(';').next().unwrap_or_default().trim().to_string())
                .collect()
        };
        let writer = Writer {
            shared: shared.clone(),
            root,
            endpoint: cfg.endpoint.clone(),
            variant: cfg.variant.clone(),
            csv: media(&cfg.csv_types),
            json: media(&cfg.json_types),
            roll_age: Duration::from_secs(cfg.roll_seconds),
            roll_bytes: cfg.roll_bytes,
            up,
            file: None,
            line: Vec::new(),
            last_warn: None,
            ids: fastrand::Rng::new(),
            time: (0, String::new()),
        };
        let writer = thread::Builder::new()
            .name("mlapp-capture".into())
            .spawn(move || writer.run())
            .map_err(start_err("the writer thread"))?;
        Ok(Capture {
            shared,
            mode: cfg.mode,
            percent: cfg.percent,
            queue_bytes: cfg.queue_bytes,
            writer: Some(writer),
            uploader,
            temp_spool,
        })
    }

    pub fn mode(&self) -> CaptureMode {
        self.mode
    }

    /// Whether to capture this request; asked before the caller copies anything.
    pub fn sample(&self) -> bool {
        if self.percent >= 100.0 {
            true
        } else if self.percent <= 0.0 {
            false
        } else {
            fastrand::f64() * 100.0 < self.percent
        }
    }

    /// Queues the record for the writer, or drops and counts it when the queue is full.
    pub fn record(&self, mut rec: Record) {
        // Directions that will not be written must not take queue room.
        if !self.mode.input() {
            rec.input = None;
        }
        if !self.mode.output() {
            rec.output = None;
        }
        let len = |p: &Option<Payload>| p.as_ref().map_or(0, |p| p.data.len());
        if rec.input.is_none() && rec.output.is_none() {
            return;
        }
        let size = RECORD_OVERHEAD + len(&rec.input) + len(&rec.output);
        let before = self.shared.in_flight.fetch_add(size, Relaxed);
        if before.saturating_add(size) > self.queue_bytes {
            self.shared.in_flight.fetch_sub(size, Relaxed);
            self.dropped_full();
            return;
        }
        let buf = lock(&self.shared.pool).pop().unwrap_or_default();
        let rec = Queued::pack(rec, buf);
        let queued = {
            let mut q = lock(&self.shared.queue);
            q.items.push_back(Msg::Rec(rec, size));
            q.items.len()
        };
        self.shared.stats.captured.fetch_add(1, Relaxed);
        // Waking the writer for every record would cost a context switch per request: it
        // wakes by itself every few milliseconds (`COLLECT`) and is woken early only when a
        // batch is waiting or the queue is filling up.
        if queued == WAKE_RECORDS || before.saturating_add(size) > self.queue_bytes / 4 {
            self.shared.wake.notify_one();
        }
    }

    fn dropped_full(&self) {
        let n = self.shared.stats.dropped_full.fetch_add(1, Relaxed) + 1;
        // try_lock: a racing thread's warning is as good, and this must not wait.
        if let Ok(mut last) = self.shared.last_full_warn.try_lock() {
            if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                *last = Some(Instant::now());
                log::warn!(
                    "capture: the queue is full ({} bytes), dropping records ({n} so far); the disk or S3 is slower than the traffic",
                    self.queue_bytes
                );
            }
        }
    }

    pub fn stats(&self) -> CaptureStats {
        let s = &self.shared.stats;
        CaptureStats {
            captured: s.captured.load(Relaxed),
            written: s.written.load(Relaxed),
            dropped_full: s.dropped_full.load(Relaxed),
            dropped_error: s.dropped_error.load(Relaxed),
            files: s.files.load(Relaxed),
            upload_failures: s.upload_failures.load(Relaxed),
        }
    }

    /// Closes the current file and waits until every record queued before the call is
    /// written (and, for S3, uploaded or given up on); false when `timeout` ran out first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let ticket = {
            let mut q = lock(&self.shared.queue);
            q.ticket += 1;
            let ticket = q.ticket;
            q.items.push_back(Msg::Flush(ticket));
            ticket
        };
        self.shared.wake.notify_one();
        let mut done = lock(&self.shared.done);
        while *done < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = (self.shared.done_cond.wait_timeout(done, left))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let done = self.flush(DROP_FLUSH);
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        if !done {
            // Joining a writer stuck on a dead disk would hang shutdown.
            log::warn!("capture: not all records were written within {DROP_FLUSH:?} of shutdown");
            return;
        }
        for handle in [self.writer.take(), self.uploader.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
        if let Some(spool) = &self.temp_spool {
            if self.stats().upload_failures == 0 {
                let _ = fs::remove_dir_all(spool);
            } else {
                log::warn!(
                    "capture: files that failed to upload are kept in {}",
                    spool.display()
                );
            }
        }
    }
}

/// One direction of a record, ready to be written.
struct Direction<'a> {
    observed_content_type: &'a [u8],
    mode: &'static str,
    data: &'a [u8],
    /// The encoding of a payload of a text type ("CSV" or "JSON"), which is written as text
    /// when it is UTF-8; any other is written as BASE64.
    text: Option<&'static str>,
}

/// Text copied from a `&str` (a content type, an inference id) as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    if !push_json_text(out, s) {
        out.extend_from_slice(b"\"\"");
    }
}

/// Appends `b` as a JSON string when it is UTF-8 (true); otherwise appends nothing (false).
/// Captured payloads are mostly plain ASCII text with a newline per record: runs of ASCII
/// without a character JSON must escape are found 32 bytes at a time (a loop the compiler
/// makes into vector instructions) and copied whole, and the same pass checks the UTF-8
/// (only from the first byte that is not ASCII on is it checked apart), which keeps the
/// writer thread's cost near a copy of the data.
fn push_json_text(out: &mut Vec<u8>, b: &[u8]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const BLOCK: usize = 32;
    if only_line_ends_to_escape(b) {
        out.reserve(b.len() + b.len() / 64 + 2);
        out.push(b'"');
        let mut start = 0;
        for i in memchr::memchr2_iter(b'\n', b'\r', b) {
            out.extend_from_slice(&b[start..i]);
            out.extend_from_slice(if b[i] == b'\n' { b"\\n" } else { b"\\r" });
            start = i + 1;
        }
        out.extend_from_slice(&b[start..]);
        out.push(b'"');
        return true;
    }
    let mark = out.len();
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    // The bit that makes a byte one to look at besides those JSON escapes: a byte that is not
    // ASCII, until the bytes from the first such one on are checked to be UTF-8.
    let mut high = 0x80;
    while i < b.len() {
        // The last block may be shorter: a small payload's tail is checked whole too.
        let block = &b[i..b.len().min(i + BLOCK)];
        if block.iter().fold(0, |acc, &c| acc | marked(c, high)) == 0 {
            i += block.len();
            continue;
        }
        i += block
            .iter()
            .position(|&c| marked(c, high) != 0)
            .unwrap_or(0);
        let c = b[i];
        if c >= 0x80 {
            // `i` starts a character: every byte before it is ASCII or was checked.
            if high != 0 && std::str::from_utf8(&b[i..]).is_err() {
                out.truncate(mark);
                return false;
            }
            high = 0;
            i += 1;
            continue;
        }
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
    true
}

/// Whether the only bytes of `b` that JSON escapes are line ends, and it is ASCII: the text of
/// CSV and JSON Lines bodies. Such text is checked in one pass with no early exit, which the
/// compiler makes into vector instructions, and its lines are then found by `memchr`: twice
/// the speed of the general scan on a transform's pieces.
fn only_line_ends_to_escape(b: &[u8]) -> bool {
    b.chunks(4096).all(|c| {
        let other = |x: u8| u8::from(marked(x, 0x80) != 0) & u8::from(x != b'\n' && x != b'\r');
        c.iter().fold(0, |acc, &x| acc | other(x)) == 0
    })
}

/// Not zero for a quote, a backslash, a control character, or a byte with the `high` bit.
#[inline(always)]
fn marked(c: u8, high: u8) -> u8 {
    u8::from(c < 0x20) | u8::from(c == b'"') | u8::from(c == b'\\') | (c & high)
}

fn push_direction(out: &mut Vec<u8>, d: &Direction<'_>) {
    out.extend_from_slice(b"{\"observedContentType\":");
    push_json_str(out, d.observed_content_type);
    out.extend_from_slice(b",\"mode\":\"");
    out.extend_from_slice(d.mode.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    let encoding = match d.text {
        Some(encoding) if push_json_text(out, d.data) => encoding,
        _ => {
            out.push(b'"');
            let mut text = String::new();
            BASE64.encode_string(d.data, &mut text);
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
            "BASE64"
        }
    };
    out.extend_from_slice(b",\"encoding\":\"");
    out.extend_from_slice(encoding.as_bytes());
    out.extend_from_slice(b"\"}");
}

fn media_type(content_type: &[u8]) -> &[u8] {
    let end = content_type.iter().position(|&b| b == b';');
    content_type[..end.unwrap_or(content_type.len())].trim_ascii()
}

fn direction<'a>(
    rec: &'a Queued,
    part: &'a Part,
    mode: &'static str,
    csv: &[String],
    json: &[String],
) -> Direction<'a> {
    let content_type = rec.text(&part.content_type);
    let media = media_type(content_type);
    let listed =
        |types: &[String]| (types.iter()).any(|t| t.as_bytes().eq_ignore_ascii_case(media));
    let text = if listed(csv) {
        Some("CSV")
    } else if listed(json) {
        Some("JSON")
    } else {
        None
    };
    Direction {
        observed_content_type: content_type,
        mode,
        data: rec.data(&part.data),
        text,
    }
}

/// A UTC time's civil parts (Howard Hinnant's days-to-civil), for capture paths and times and
/// for `portal::view::iso`.
pub struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub milli: i64,
}

impl Civil {
    pub fn from_ms(ms: i64) -> Self {
        let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            milli,
        }
    }

    fn seconds(&self) -> String {
        let c = self;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }
}

/// Clocks before 1970 are broken; their records go to 1970 rather than nowhere.
fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Open {
    partial: PathBuf,
    path: PathBuf,
    /// The path below the root with `/`, which is also the S3 key below the prefix.
    key: String,
    out: BufWriter<File>,
    hour: i64,
    opened: Instant,
    last_flush: Instant,
    bytes: u64,
    /// The file's length after the last successful flush, and the lines within it.
    good: u64,
    lines_ok: u64,
    /// Lines handed to the buffer since.
    pending: u64,
}

struct Writer {
    shared: Arc<Shared>,
    root: PathBuf,
    endpoint: String,
    variant: String,
    csv: Vec<String>,
    json: Vec<String>,
    roll_age: Duration,
    roll_bytes: u64,
    up: Option<(mpsc::Sender<Up>, S3Uri)>,
    file: Option<Open>,
    line: Vec<u8>,
    last_warn: Option<Instant>,
    /// Random bits of event ids.
    ids: fastrand::Rng,
    /// The last inference time written, by its second.
    time: (i64, String),
}

impl Writer {
    fn run(mut self) {
        let mut batch = VecDeque::new();
        let mut spare = Vec::new();
        loop {
            let stop = {
                let mut q = lock(&self.shared.queue);
                if q.items.is_empty() && !q.stop {
                    // A timeout also when idle, so a quiet server still flushes and rolls.
                    let wait = self.idle_wait();
                    q = (self.shared.wake.wait_timeout(q, wait))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                std::mem::swap(&mut q.items, &mut batch);
                q.stop && batch.is_empty()
            };
            if stop {
                self.close();
                return;
            }
            let idle = batch.is_empty();
            if !idle {
                #[cfg(test)]
                let shared = self.shared.clone();
                #[cfg(test)]
                let _gate = lock(&shared.gate);
                for msg in batch.drain(..) {
                    match msg {
                        Msg::Rec(rec, size) => {
                            self.write(&rec);
                            self.shared.in_flight.fetch_sub(size, Relaxed);
                            if rec.buf.capacity() <= POOL_CAPACITY && spare.len() < POOL_BUFFERS {
                                spare.push(rec.buf);
                            }
                        }
                        Msg::Flush(ticket) => self.flush_marker(ticket),
                    }
                }
                let mut pool = lock(&self.shared.pool);
                let room = POOL_BUFFERS.saturating_sub(pool.len());
                pool.extend(spare.drain(..).take(room).map(|mut b| {
                    b.clear();
                    b
                }));
            }
            if let Some(f) = &self.file {
                if f.opened.elapsed() >= self.roll_age {
                    self.close();
                } else if f.pending > 0 && (idle || f.last_flush.elapsed() >= FLUSH_EVERY) {
                    self.flush_file();
                }
            }
        }
    }

    fn idle_wait(&self) -> Duration {
        match &self.file {
            None => COLLECT,
            // Lines in the buffer: give a burst a moment to join them, then flush.
            Some(f) if f.pending > 0 => Duration::from_millis(10),
            Some(f) => (self.roll_age.saturating_sub(f.opened.elapsed()))
                .clamp(Duration::from_millis(1), COLLECT),
        }
    }

    fn flush_marker(&mut self, ticket: u64) {
        self.close();
        match &self.up {
            // The uploader marks it done once the files before it are uploaded; if it is
            // gone, the flush honestly times out.
            Some((tx, _)) => {
                let _ = tx.send(Up::Flush(ticket));
            }
            None => self.shared.mark_done(ticket),
        }
    }

    fn write(&mut self, rec: &Queued) {
        let ms = epoch_ms(rec.time);
        self.encode(rec, ms);
        let hour = ms.div_euclid(HOUR_MS);
        if self.file.as_ref().is_some_and(|f| f.hour != hour) {
            self.close();
        }
        if self.file.is_none() {
            match self.open(ms) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.dropped(1);
                    let root = self.root.display().to_string();
                    self.warn(|| format!("cannot open a capture file under {root}: {e}"));
                    return;
                }
            }
        }
        let Some(f) = self.file.as_mut() else { return };
        match f.out.write_all(&self.line) {
            Ok(()) => {
                f.pending += 1;
                f.bytes += self.line.len() as u64;
                if f.bytes >= self.roll_bytes {
                    self.close();
                }
            }
            Err(e) => {
                self.dropped(1);
                self.fail(e);
            }
        }
    }

    fn encode(&mut self, rec: &Queued, ms: i64) {
        // Event ids need to be unique, not secret: no system call per record.
        let random = self.ids.u128(..).to_le_bytes();
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let event_id = uuid::Builder::from_random_bytes(random)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut id);
        let (csv, json) = (&self.csv, &self.json);
        let out = &mut self.line;
        out.clear();
        out.extend_from_slice(b"{\"captureData\":{");
        let input = (rec.input.as_ref()).map(|p| direction(rec, p, "INPUT", csv, json));
        let output = (rec.output.as_ref()).map(|p| direction(rec, p, "OUTPUT", csv, json));
        if let Some(d) = &input {
            out.extend_from_slice(b"\"endpointInput\":");
            push_direction(out, d);
        }
        if let Some(d) = &output {
            if input.is_some() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"endpointOutput\":");
            push_direction(out, d);
        }
        out.extend_from_slice(b"},\"eventMetadata\":{\"eventId\":\"");
        out.extend_from_slice(event_id.as_bytes());
        out.push(b'"');
        if let Some(id) = &rec.inference_id {
            out.extend_from_slice(b",\"inferenceId\":");
            push_json_str(out, rec.text(id));
        }
        out.extend_from_slice(b",\"inferenceTime\":\"");
        // Formatted once per second, not once per record.
        let second = ms.div_euclid(1000);
        if self.time.0 != second || self.time.1.is_empty() {
            self.time = (second, Civil::from_ms(ms).seconds());
        }
        let out = &mut self.line;
        out.extend_from_slice(self.time.1.as_bytes());
        out.extend_from_slice(b"\"},\"eventVersion\":\"0\"}\n");
    }

    fn open(&self, ms: i64) -> io::Result<Open> {
        let c = Civil::from_ms(ms);
        let dir_key = format!(
            "{}/{}/{:04}/{:02}/{:02}/{:02}",
            self.endpoint, self.variant, c.year, c.month, c.day, c.hour
        );
        let dir = self.root.join(&dir_key);
        fs::create_dir_all(&dir)?;
        let id = uuid::Uuid::new_v4();
        let name = format!("{:02}-{:02}-{:03}-{id}.jsonl", c.minute, c.second, c.milli);
        // Readers (and globs for `*.jsonl`) skip the file until it is complete.
        let partial = dir.join(format!(".{name}.partial"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)?;
        let now = Instant::now();
        Ok(Open {
            partial,
            path: dir.join(&name),
            key: format!("{dir_key}/{name}"),
            out: BufWriter::with_capacity(256 << 10, file),
            hour: ms.div_euclid(HOUR_MS),
            opened: now,
            last_flush: now,
            bytes: 0,
            good: 0,
            lines_ok: 0,
            pending: 0,
        })
    }

    /// Hands the buffered lines to the OS; on failure the file is given up (see `fail`).
    fn flush_file(&mut self) -> bool {
        let Some(f) = self.file.as_mut() else {
            return true;
        };
        match f.out.flush() {
            Ok(()) => {
                f.good = f.bytes;
                f.lines_ok += f.pending;
                f.pending = 0;
                f.last_flush = Instant::now();
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// After a failed write: the lines still buffered are lost; those already on disk are
    /// kept (a half-written line cut off) and published. The next record opens a new file.
    fn fail(&mut self, e: io::Error) {
        let Some(f) = self.file.take() else { return };
        let path = f.partial.display().to_string();
        self.warn(|| format!("writing {path} failed, records dropped: {e}"));
        let (file, _unwritten) = f.out.into_parts();
        let kept = f.lines_ok > 0 && file.set_len(f.good).is_ok();
        drop(file);
        let lines = if kept { f.lines_ok } else { 0 };
        self.dropped(f.pending + f.lines_ok - lines);
        self.publish(&f.partial, &f.path, f.key, lines);
    }

    fn close(&mut self) {
        if !self.flush_file() {
            return;
        }
        let Some(f) = self.file.take() else { return };
        drop(f.out);
        self.publish(&f.partial, &f.path, f.key, f.lines_ok);
    }

    /// Renames a finished file into view and, for S3, queues its upload.
    fn publish(&mut self, partial: &Path, path: &Path, key: String, lines: u64) {
        if lines == 0 {
            let _ = fs::remove_file(partial);
            return;
        }
        if let Err(e) = fs::rename(partial, path) {
            self.dropped(lines);
            let shown = path.display().to_string();
            self.warn(|| format!("cannot finish {shown}, {lines} records dropped: {e}"));
            let _ = fs::remove_file(partial);
            return;
        }
        self.shared.stats.written.fetch_add(lines, Relaxed);
        self.shared.stats.files.fetch_add(1, Relaxed);
        if let Some((tx, prefix)) = &self.up {
            let _ = tx.send(Up::File {
                path: path.to_path_buf(),
                key: prefix.join(&key),
            });
        }
    }

    fn dropped(&self, records: u64) {
        self.shared.stats.dropped_error.fetch_add(records, Relaxed);
    }

    fn warn(&mut self, message: impl FnOnce() -> String) {
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warn = Some(Instant::now());
            log::warn!("capture: {}", message());
        }
    }
}

enum Up {
    File { path: PathBuf, key: S3Uri },
    Flush(u64),
}

/// Uploads with the AWS SDK on a runtime of its own, so that capture never runs on (or
/// waits for) the server's runtime.
fn s3_upload(opts: S3Options) -> io::Result<UploadFn> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut store: Option<S3Store> = None;
    Ok(Box::new(move |path: &Path, key: &S3Uri| {
        let store = store.get_or_insert_with(|| rt.block_on(S3Store::connect(&opts)));
        rt.block_on(store.upload(path, key))
            .map_err(|e| e.to_string())
    }))
}

fn upload_loop(shared: &Shared, rx: mpsc::Receiver<Up>, mut upload: UploadFn) {
    for msg in rx {
        let (path, key) = match msg {
            Up::Flush(ticket) => {
                shared.mark_done(ticket);
                continue;
            }
            Up::File { path, key } => (path, key),
        };
        for attempt in 1..=UPLOAD_ATTEMPTS {
            match upload(&path, &key) {
                Ok(()) => {
                    if let Err(e) = fs::remove_file(&path) {
                        log::warn!(
                            "capture: cannot remove {} after upload: {e}",
                            path.display()
                        );
                    }
                    break;
                }
                Err(_) if attempt < UPLOAD_ATTEMPTS => {
                    thread::sleep(BACKOFF * (1 << (attempt - 1)))
                }
                Err(e) => {
                    shared.stats.upload_failures.fetch_add(1, Relaxed);
                    log::error!(
                        "capture: uploading {} to {key} failed {UPLOAD_ATTEMPTS} times, the file is kept: {e}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// 2026-12-02T13:59:59.900Z
    const T: i64 = 1_796_219_999_900;

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    }

    fn payload(content_type: &str, data: &[u8]) -> Option<Payload> {
        let (content_type, data) = (Arc::from(content_type), bytes::Bytes::copy_from_slice(data));
        Some(Payload { content_type, data })
    }

    fn csv(ms: i64, body: &str) -> Record {
        Record {
            input: payload("text/csv", body.as_bytes()),
            output: payload("text/csv", b"0.5\n"),
            inference_id: None,
            time: at(ms),
        }
    }

    fn config(uri: &Path) -> CaptureConfig {
        let mut cfg = CaptureConfig::new(uri.to_string_lossy(), "ep");
        cfg.percent = 100.0;
        cfg
    }

    /// Visible capture files below `root`, sorted.
    fn files(root: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        out.sort();
        out
    }

    fn lines(root: &Path) -> Vec<String> {
        let read = |p: &PathBuf| fs::read_to_string(p).unwrap();
        let text: Vec<String> = files(root).iter().map(read).collect();
        text.iter()
            .flat_map(|t| t.lines().map(str::to_string))
            .collect()
    }

    /// `d` a digit, `x` a lower-case hex digit or `-`, anything else itself.
    fn fits(s: &str, pattern: &str) -> bool {
        s.len() == pattern.len()
            && s.chars().zip(pattern.chars()).all(|(c, p)| match p {
                'd' => c.is_ascii_digit(),
                'x' => matches!(c, '0'..='9' | 'a'..='f' | '-'),
                _ => c == p,
            })
    }

    fn file_name_fits(p: &Path) -> bool {
        let name = p.file_name().unwrap().to_str().unwrap();
        fits(name, &format!("dd-dd-ddd-{}.jsonl", "x".repeat(36)))
    }

    #[test]
    fn lines_have_sagemakers_layout_and_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capture::start(config(dir.path())).unwrap();
        cap.record(Record {
            input: payload("text/csv", b"1,2,3\n"),
            output: payload("text/csv; charset=utf-8", b"0.5\n"),
            inference_id: Some("req-1".into()),
            time: at(T),
        });
        let npy = [0x93u8, b'N', b'U', b'M', b'P', b'Y', 0xff, 0, 1];
        cap.record(Record {
            input: payload("Application/JSON ; charset=utf-8", br#"{"a": [1, 2]}"#),
            output: payload("application/x-npy", &npy),
            inference_id: None,
            time: at(T),
        });
        cap.record(Record {
            input: payload("text/csv", &[0xff, 0xfe, b',']),
            output: None,
            inference_id: None,
            time: at(T),
        });
        assert!(cap.flush(Duration::from_secs(10)));
        let lines = lines(dir.path());
        assert_eq!(lines.len(), 3);
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let id = parsed[0]["eventMetadata"]["eventId"].as_str().unwrap();
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        assert!(fits(id, &"x".repeat(36)) && uuid.get_version_num() == 4);
        let want = format!(
            concat!(
                r#"{{"captureData":{{"endpointInput":{{"observedContentType":"text/csv","mode":"INPUT","data":"1,2,3\n","encoding":"CSV"}},"#,
                r#""endpointOutput":{{"observedContentType":"text/csv; charset=utf-8","mode":"OUTPUT","data":"0.5\n","encoding":"CSV"}}}},"#,
                r#""eventMetadata":{{"eventId":"{}","inferenceId":"req-1","inferenceTime":"2026-12-02T13:59:59Z"}},"eventVersion":"0"}}"#
            ),
            id
        );
        assert_eq!(lines[0], want);
        let (json, npy_out) = (
            &parsed[1]["captureData"]["endpointInput"],
            &parsed[1]["captureData"]["endpointOutput"],
        );
        assert_eq!(json["encoding"], "JSON");
        assert_eq!(json["data"], r#"{"a": [1, 2]}"#);
        assert_eq!(
            json["observedContentType"],
            "Application/JSON ; charset=utf-8"
        );
        assert_eq!(npy_out["encoding"], "BASE64");
        assert_eq!(
            BASE64.decode(npy_out["data"].as_str().unwrap()).unwrap(),
            npy
        );
        assert!(parsed[1]["eventMetadata"].get("inferenceId").is_none());
        assert!(!lines[1].contains("inferenceId"));
        // Text types that are not UTF-8 cannot be stored as text.
        let bad = &parsed[2]["captureData"];
        assert_eq!(bad["endpointInput"]["encoding"], "BASE64");
        assert!(bad.get("endpointOutput").is_none());
        for p in &parsed {
            let time = p["eventMetadata"]["inferenceTime"].as_str().unwrap();
            assert!(fits(time, "dddd-dd-ddTdd:dd:ddZ"), "{time}");
        }
        let ids: std::collections::HashSet<_> = parsed
            .iter()
            .map(|p| p["eventMetadata"]["eventId"].to_string())
            .collect();
        assert_eq!(ids.len(), 3);
    }

    /// Records of every size, one after another in batches: shared large payloads, copied
    /// small ones in reused buffers of other sizes, inference ids; each reads back as it was.
    #[test]
    fn records_of_any_size_read_back_in_reused_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capture::start(config(dir.path())).unwrap();
        let sizes = [
            COPY_AT_MOST * 3,
            10,
            COPY_AT_MOST,
            0,
            COPY_AT_MOST + 1,
            3000,
            1,
        ];
        let mut want = Vec::new();
        for round in 0..3 {
            for (i, &n) in sizes.iter().enumerate() {
                let body: String = (0..n)
                    .map(|k| char::from(b'0' + ((k + i) % 10) as u8))
                    .collect();
                let mut rec = csv(T, &body);
                rec.inference_id = (i % 2 == 0).then(|| format!("id-{round}-{i}"));
                want.push((body, rec.inference_id.clone()));
                cap.record(rec);
            }
            // A flush between rounds: the writer's buffers go back to the pool for the next.
            assert!(cap.flush(Duration::from_secs(10)));
        }
        // Each flush closes a file, and files of one hour are not named in order.
        let mut got: Vec<(String, Option<String>)> = lines(dir.path())
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let data = v["captureData"]["endpointInput"]["data"].as_str().unwrap();
                let id = v["eventMetadata"]["inferenceId"]
                    .as_str()
                    .map(str::to_string);
                assert_eq!(v["captureData"]["endpointOutput"]["data"], "0.5\n");
                assert_eq!(
                    v["captureData"]["endpointInput"]["observedContentType"],
                    "text/csv"
                );
                (data.to_string(), id)
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(lock(&cap.shared.pool).len() <= POOL_BUFFERS);
    }

    #[test]
    fn modes_write_only_their_directions() {
        for (mode, input, output) in [
            (CaptureMode::Input, true, false),
            (CaptureMode::Output, false, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(dir.path());
            cfg.mode = mode;
            let cap = Capture::start(cfg).unwrap();
            cap.record(csv(T, "1\n"));
            // Nothing of the chosen direction: not written at all.
            let mut empty = csv(T, "1\n");
            (empty.input, empty.output) = (None, None);
            cap.record(empty);
            assert!(cap.flush(Duration::from_secs(10)));
            let lines = lines(dir.path());
            assert_eq!(lines.len(), 1);
            let v: Value = serde_json::from_str(&lines[0]).unwrap();
            assert_eq!(v["captureData"].get("endpointInput").is_some(), input);
            assert_eq!(v["captureData"].get("endpointOutput").is_some(), output);
        }
        assert_eq!("BOTH".parse::<CaptureMode>().unwrap(), CaptureMode::Both);
        assert_eq!(
            " output".parse::<CaptureMode>().unwrap(),
            CaptureMode::Output
        );
        let err = "request".parse::<CaptureMode>().unwrap_err().to_string();
        assert!(
            err.contains("input, output or both") && err.contains("request"),
            "{err}"
        );
    }

    #[test]
    fn start_names_the_bad_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.percent = 120.0;
        let err = Capture::start(cfg).err().unwrap().to_string();
        assert_eq!(err, "--capture-percent must be between 0 and 100, got 120");
        let mut cfg = config(dir.path());
        cfg.endpoint = "../up".into();
        let err = Capture::start(cfg).err().unwrap().to_string();
        assert!(
            err.contains("--capture-endpoint") && err.contains("../up"),
            "{err}"
        );
        let mut cfg = config(dir.path());
        cfg.uri = "s3:///key".into();
        let err = Capture::start(cfg).err().unwrap().to_string();
        assert!(err.starts_with("--capture-uri"), "{err}");
    }

    #[test]
    fn civil_parts_of_known_times() {
        // `date -u -d @<secs> +%FT%TZ`
        for (ms, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_796_219_999_900, "2026-12-02T13:59:59Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59Z"),
        ] {
            assert_eq!(Civil::from_ms(ms).seconds(), want);
        }
    }

    #[test]
    fn records_go_to_the_folder_of_their_hour() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capture::start(config(dir.path())).unwrap();
        cap.record(csv(T, "1\n"));
        cap.record(csv(T + 200, "2\n"));
        assert!(cap.flush(Duration::from_secs(10)));
        let files = files(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        let base = dir.path().join("ep/AllTraffic/2026/12/02");
        assert_eq!(files[0].parent().unwrap(), base.join("13"));
        assert_eq!(files[1].parent().unwrap(), base.join("14"));
        assert!(files.iter().all(|f| file_name_fits(f)), "{files:?}");
        assert!(files[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("59-59-900-"));
        assert!(files[1]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("00-00-100-"));
        assert_eq!(cap.stats().files, 2);
    }

    #[test]
    fn sampling_follows_the_percentage() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        for (percent, low, high) in [(20.0, 3700, 4300), (0.0, 0, 0), (100.0, 20_000, 20_000)] {
            cfg.percent = percent;
            let cap = Capture::start(cfg.clone()).unwrap();
            let hits = (0..20_000).filter(|_| cap.sample()).count();
            assert!((low..=high).contains(&hits), "{percent}%: {hits} of 20000");
        }
    }

    #[test]
    fn nothing_is_lost_at_full_rate() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Arc::new(Capture::start(config(dir.path())).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cap = cap.clone();
                thread::spawn(move || {
                    for i in 0..12_500 {
                        cap.record(csv(epoch_ms(SystemTime::now()), &format!("{t},{i}\n")));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(cap.flush(Duration::from_secs(120)));
        assert_eq!(lines(dir.path()).len(), 50_000);
        let stats = cap.stats();
        assert_eq!(
            (stats.captured, stats.written, stats.dropped_full),
            (50_000, 50_000, 0)
        );
    }

    #[test]
    fn a_stalled_writer_costs_drops_not_latency() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.queue_bytes = 1024;
        let cap = Capture::start(cfg).unwrap();
        let body = "x".repeat(600);
        let gate = lock(&cap.shared.gate);
        let mut slowest = Duration::ZERO;
        for _ in 0..100 {
            let t = Instant::now();
            cap.record(csv(T, &body));
            slowest = slowest.max(t.elapsed());
        }
        assert!(slowest < Duration::from_millis(10), "{slowest:?}");
        drop(gate);
        assert!(cap.flush(Duration::from_secs(10)));
        let stats = cap.stats();
        assert!(stats.dropped_full > 0, "{stats:?}");
        assert_eq!(stats.written + stats.dropped_full, 100, "{stats:?}");
        assert_eq!(lines(dir.path()).len() as u64, stats.written);
        assert_eq!(cap.shared.in_flight.load(Relaxed), 0);
    }

    #[test]
    fn files_roll_by_size_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.roll_bytes = 1000;
        let cap = Capture::start(cfg).unwrap();
        for i in 0..30 {
            cap.record(csv(T - 1000, &format!("{i},{}\n", "7".repeat(100))));
        }
        assert!(cap.flush(Duration::from_secs(10)));
        let files = files(dir.path());
        assert!(files.len() >= 5, "{files:?}");
        let mut total = 0;
        for f in &files {
            assert!(file_name_fits(f), "{f:?}");
            let text = fs::read_to_string(f).unwrap();
            assert!(text.ends_with('\n'));
            for l in text.lines() {
                serde_json::from_str::<Value>(l).unwrap();
                total += 1;
            }
        }
        assert_eq!(total, 30);

        // A quiet server still closes its file after roll_seconds.
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.roll_seconds = 1;
        let cap = Capture::start(cfg).unwrap();
        cap.record(csv(T, "1\n"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while self::files(dir.path()).iter().all(|f| !file_name_fits(f))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(lines(dir.path()).len(), 1);
        assert_eq!(cap.stats().written, 1);
    }

    #[test]
    fn write_errors_are_counted_and_survived() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("capture");
        let cap = Capture::start(config(&root)).unwrap();
        cap.record(csv(T, "1\n"));
        assert!(cap.flush(Duration::from_secs(10)));
        assert_eq!(cap.stats().written, 1);
        // The target folder is replaced by a file, with and without a file open.
        cap.record(csv(T, "2\n"));
        fs::rename(&root, dir.path().join("moved")).unwrap();
        fs::write(&root, "not a folder").unwrap();
        cap.record(csv(T, "3\n"));
        cap.record(csv(T, "4\n"));
        assert!(cap.flush(Duration::from_secs(10)));
        let stats = cap.stats();
        assert_eq!((stats.written, stats.dropped_error), (1, 3), "{stats:?}");
        // The next record after the folder is back gets a new file.
        fs::remove_file(&root).unwrap();
        cap.record(csv(T, "5\n"));
        assert!(cap.flush(Duration::from_secs(10)));
        assert_eq!(cap.stats().written, 2);
        assert_eq!(lines(&root).len(), 1);
    }

    fn s3_capture(dir: &Path, fail: bool) -> (Capture, Arc<Mutex<Vec<String>>>) {
        let mut cfg = config(dir);
        cfg.uri = "s3://bucket/pre/fix".into();
        cfg.spool = Some(dir.join("spool"));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let seen = keys.clone();
        let upload: UploadFn = Box::new(move |path: &Path, key: &S3Uri| {
            assert!(path.is_file());
            lock(&seen).push(format!("{}:{}", key.bucket, key.key));
            if fail {
                Err("injected".into())
            } else {
                Ok(())
            }
        });
        (Capture::launch(cfg, Some(upload)).unwrap(), keys)
    }

    #[test]
    fn s3_files_are_uploaded_under_the_prefix_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (cap, keys) = s3_capture(dir.path(), false);
        cap.record(csv(T, "1\n"));
        assert!(cap.flush(Duration::from_secs(10)));
        let keys = lock(&keys).clone();
        assert_eq!(keys.len(), 1);
        let (head, name) = keys[0].rsplit_once('/').unwrap();
        assert_eq!(head, "bucket:pre/fix/ep/AllTraffic/2026/12/02/13");
        assert!(file_name_fits(Path::new(name)), "{name}");
        assert!(files(&dir.path().join("spool")).is_empty());
        assert_eq!(cap.stats().upload_failures, 0);
    }

    #[test]
    fn failed_uploads_are_retried_counted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cap, keys) = s3_capture(dir.path(), true);
        cap.record(csv(T, "1\n"));
        assert!(cap.flush(Duration::from_secs(10)));
        assert_eq!(lock(&keys).len(), UPLOAD_ATTEMPTS as usize);
        assert_eq!(cap.stats().upload_failures, 1);
        let kept = files(&dir.path().join("spool"));
        assert_eq!(kept.len(), 1);
        assert!(file_name_fits(&kept[0]));
    }

    proptest::proptest! {
        /// Any text, control characters and non-ASCII included, reads back from its JSON.
        #[test]
        fn json_strings_read_back(text in "(?s).{0,80}", plain in "[a-z,0-9.]{0,40}") {
            for t in [text.as_str(), plain.as_str(), &format!("{plain}\n{text}\"\\{plain}")] {
                let mut out = Vec::new();
                push_json_str(&mut out, t.as_bytes());
                let back: String = serde_json::from_slice(&out).unwrap();
                proptest::prop_assert_eq!(back, t);
            }
        }

        /// Lines of CSV or JSON Lines text (the fast path) are written as serde_json writes
        /// the same string, and so is the same text with one character that the general
        /// scan must escape.
        #[test]
        fn line_texts_are_written_as_serde_json_writes_them(
            text in "[a-z0-9,.{}:\\-]{0,100}(\r?\n[a-z0-9,.{}:\\-]{0,100}){0,8}\r?\n?",
            other in "[\"\\\\\t\u{1}é]",
            at in 0usize..1000,
        ) {
            let mut out = Vec::new();
            proptest::prop_assert!(push_json_text(&mut out, text.as_bytes()));
            proptest::prop_assert_eq!(&out, &serde_json::to_vec(&text).unwrap());
            let cut = text.char_indices().map(|(i, _)| i).nth(at).unwrap_or(text.len());
            let mixed = format!("{}{other}{}", &text[..cut], &text[cut..]);
            out.clear();
            proptest::prop_assert!(push_json_text(&mut out, mixed.as_bytes()));
            proptest::prop_assert_eq!(&out, &serde_json::to_vec(&mixed).unwrap());
        }

        /// Any bytes: written as a JSON string exactly when they are UTF-8, and nothing is
        /// left in the line when they are not (their direction is then written as BASE64).
        #[test]
        fn only_utf8_is_written_as_text(
            ascii in "[ -~\n]{0,40}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            at in 0usize..41,
        ) {
            let mut b = ascii.into_bytes();
            let at = at.min(b.len());
            b.splice(at..at, bytes);
            let mut out = b"{".to_vec();
            let written = push_json_text(&mut out, &b);
            match std::str::from_utf8(&b) {
                Ok(t) => {
                    proptest::prop_assert!(written);
                    let back: String = serde_json::from_slice(&out[1..]).unwrap();
                    proptest::prop_assert_eq!(back, t);
                }
                Err(_) => {
                    proptest::prop_assert!(!written);
                    proptest::prop_assert_eq!(out, b"{".to_vec());
                }
            }
        }
    }
}
