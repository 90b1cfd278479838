//! The sessions of one model and the threads that feed them.
//!
//! Every request is admitted against one bound (`capacity` requests in flight); past it the
//! request is refused at once. Small requests whose measured cost fits a budget (2 ms by
//! default, `--inline-budget-ms`) are then
//! scored on the HTTP thread they arrived on, with the others of the same event-loop turn
//! (`local`). Others, and any that find every session busy, wait in one queue whose batching
//! decisions come from `batcher::State`: one worker thread per session takes the next batch,
//! joins its frames into one run and cuts the outputs back per request. A request whose
//! deadline passed while queued is answered without being run.
//!
//! Cutting a large request into one piece per session was measured slower (10,000-row
//! requests at 2 connections: 260-270k against 300-336k rows/s), so a request runs whole.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batcher::{Entry, Next, Policy, State};
use super::unit::Unit;
use super::{combine, local};
use crate::codec::Frame;
use crate::model::Outputs;
use crate::monitor::Metrics;
use crate::pipeline::wasm::{Inline, OVERRAN_INLINE};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the inference queue is full ({0} requests in flight)")]
    Overloaded(usize),
    #[error("the request's deadline passed before inference started")]
    DeadlineExceeded,
    #[error("the inference engine is shutting down")]
    Stopped,
    #[error("inference failed: {0}")]
    Run(String),
    /// A row count the model cannot take (the client's error).
    #[error("{0}")]
    Rows(String),
}

/// A request's outputs and where its time went.
#[derive(Debug)]
pub struct Scored {
    pub outputs: Outputs,
    pub queued: Duration,
    pub inference: Duration,
}

type Reply = oneshot::Sender<Result<Scored, EngineError>>;

pub(super) struct Job {
    frame: Frame,
    reply: Reply,
}

struct Queue {
    state: State<Job>,
    closed: bool,
}

pub(super) struct Shared {
    policy: Policy,
    /// Requests admitted and not yet answered, wherever they wait: the bound that admission
    /// control enforces.
    admitted: AtomicUsize,
    queue: Mutex<Queue>,
    wake: Condvar,
    sessions: Vec<Mutex<Unit>>,
    metrics: Arc<Metrics>,
    /// Measured cost of a row, in ns (a moving average over recent runs; 0 until the first
    /// run): whether a request is cheap enough to run on an HTTP thread.
    ns_per_row: AtomicU64,
}

pub struct Engine {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside ORT would poison a session lock; the session itself is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn start(
        sessions: Vec<Unit>,
        policy: Policy,
        metrics: Arc<Metrics>,
        background: bool,
    ) -> Self {
        let n = sessions.len();
        let shared = Arc::new(Shared {
            policy,
            admitted: AtomicUsize::new(0),
            queue: Mutex::new(Queue {
                state: State::new(policy),
                closed: false,
            }),
            wake: Condvar::new(),
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            metrics,
            ns_per_row: AtomicU64::new(0),
        });
        let workers = (0..n)
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("mlapp-infer-{i}"))
                    .spawn(move || {
                        if background {
                            lowest_priority();
                        }
                        worker(&shared, i)
                    })
                    .map_err(|e| log::error!("could not start an inference thread: {e}"))
                    .ok()
            })
            .collect();
        Self {
            shared,
            workers: Mutex::new(workers),
        }
    }

    pub fn policy(&self) -> Policy {
        self.shared.policy
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Requests waiting for a session now.
    pub fn queue_depth(&self) -> usize {
        lock(&self.shared.queue).state.len()
    }

    /// Admits one request, or refuses it at once when `capacity` requests are already in
    /// flight. Callers take the ticket once the body is read (bodies being read are bounded
    /// in bytes, by the HTTP layer) and before decoding it, so a refusal costs no parsing.
    /// The ticket is owned: work that outlives its request (a decode on the blocking pool
    /// when the deadline passed) keeps holding it until it really ends.
    pub fn admit(&self) -> Result<Admitted, EngineError> {
        Admitted::enter(&self.shared)
    }

    /// Scores the frame of an admitted request. The deadline covers the time spent waiting.
    ///
    /// On an HTTP thread, requests that fit one batch are gathered for the rest of the
    /// event-loop turn and scored together on that thread (`local`); larger ones, or any
    /// when a batching delay is configured, go to the worker threads' queue.
    /// `_ticket` proves the request was admitted; it is not otherwise used.
    pub async fn score(
        &self,
        _ticket: &Admitted,
        frame: Frame,
        deadline: Instant,
    ) -> Result<Scored, EngineError> {
        let sh = &self.shared;
        let local = frame.rows <= sh.policy.max_rows
            && sh.policy.max_delay.is_zero()
            && sh.fits_inline(frame.rows)
            && local::available();
        let rx = if local {
            let (reply, rx) = oneshot::channel();
            local::enqueue(&self.shared, entry(frame, deadline, reply));
            rx
        } else {
            self.submit(frame, deadline, false)?
        };
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Scores a frame on the worker threads, never inline: for pieces of a large input
    /// (`stream`), which run as tasks of their own, outside the HTTP thread's turn.
    pub async fn score_on_workers(
        &self,
        _ticket: &Admitted,
        frame: Frame,
        deadline: Instant,
    ) -> Result<Scored, EngineError> {
        self.submit(frame, deadline, true)?
            .await
            .map_err(|_| EngineError::Stopped)?
    }

    /// Queues a frame for the worker threads; the answer arrives on the returned channel.
    /// A `piece` of a large input is queued whatever the queue holds (`State::push_piece`).
    fn submit(
        &self,
        frame: Frame,
        deadline: Instant,
        piece: bool,
    ) -> Result<oneshot::Receiver<Result<Scored, EngineError>>, EngineError> {
        let (reply, rx) = oneshot::channel();
        let entry = entry(frame, deadline, reply);
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(EngineError::Stopped);
        }
        if piece {
            q.state.push_piece(entry);
        } else {
            q.state
                .push(entry)
                .map_err(|_| EngineError::Overloaded(self.shared.policy.capacity))?;
        }
        drop(q);
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Lets queued requests finish, then joins the workers.
    pub fn shutdown(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        let handles = std::mem::take(&mut *lock(&self.workers));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Shared {
    pub(super) fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }

    /// The estimated run time of `rows` rows, in ns; None before any run was measured.
    fn estimate(&self, rows: usize) -> Option<u64> {
        match self.ns_per_row.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns.saturating_mul(rows as u64)),
        }
    }

    /// Whether `rows` rows may run on an HTTP thread. Unmeasured models run on the workers
    /// first: a model whose first run takes a second must not take an event loop with it.
    fn fits_inline(&self, rows: usize) -> bool {
        self.estimate(rows)
            .is_some_and(|ns| ns <= self.inline_budget_ns())
    }

    /// `Policy::inline_budget`: the most inference time an HTTP thread may spend in one
    /// event-loop turn. Everything else on that thread (`/ping`, `/metrics`, other
    /// connections' reads, deadline timers) waits while it runs, so a request (or a turn's
    /// gathered requests) estimated to take longer goes to the worker threads.
    fn inline_budget_ns(&self) -> u64 {
        u64::try_from(self.policy.inline_budget.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Folds one run into the cost per row (an exponential moving average, 1/8 weight).
    fn measured(&self, rows: usize, took: Duration) {
        let sample = (took.as_nanos() / rows.max(1) as u128).clamp(1, u64::MAX as u128) as u64;
        let old = self.ns_per_row.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.ns_per_row.store(new.max(1), Ordering::Relaxed);
    }

    /// Hands jobs to the worker threads (an HTTP thread must never block on a session).
    fn to_workers(&self, jobs: impl IntoIterator<Item = Entry<Job>>) {
        let mut q = lock(&self.queue);
        for e in jobs {
            if q.closed {
                let _ = e.item.reply.send(Err(EngineError::Stopped));
                continue;
            }
            // Admission was checked in `score`; the queue's own bound is a backstop.
            if let Err(e) = q.state.push(e) {
                let _ = e
                    .item
                    .reply
                    .send(Err(EngineError::Overloaded(self.policy.capacity)));
            }
        }
        drop(q);
        self.wake.notify_all();
    }
}

fn entry(frame: Frame, deadline: Instant, reply: Reply) -> Entry<Job> {
    Entry {
        rows: frame.rows,
        enqueued: Instant::now(),
        deadline,
        item: Job { frame, reply },
        piece: false,
    }
}

/// One admitted request; leaves the count however the request ends (its future may be
/// dropped when it times out, while blocking work it started still holds the ticket).
pub struct Admitted(Arc<Shared>);

impl Admitted {
    fn enter(sh: &Arc<Shared>) -> Result<Self, EngineError> {
        let before = sh.admitted.fetch_add(1, Ordering::AcqRel);
        let me = Admitted(Arc::clone(sh));
        if before >= sh.policy.capacity {
            return Err(EngineError::Overloaded(sh.policy.capacity));
        }
        Ok(me)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Puts the calling thread at nice 19: on Linux a thread's nice value is its own, so the
/// rest of the process keeps its priority.
pub fn lowest_priority() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), 19) {
        log::debug!("could not lower an inference thread's priority: {e}");
    }
}

fn worker(sh: &Shared, index: usize) {
    while let Some(batch) = next_batch(sh) {
        run_batch(sh, index, batch);
    }
}

/// Blocks until there is a batch to run; None once the engine is closed and drained.
fn next_batch(sh: &Shared) -> Option<Vec<Entry<Job>>> {
    let mut q = lock(&sh.queue);
    loop {
        let now = Instant::now();
        for e in q.state.expire(now) {
            let _ = e.item.reply.send(Err(EngineError::DeadlineExceeded));
        }
        q.state.forget(|job| job.reply.is_closed());
        match q.state.next(now) {
            Next::Run(batch) => return Some(batch),
            Next::Idle if q.closed => return None,
            Next::Idle => q = sh.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
            // Once closed, nothing new will arrive to fill the batch: run what is there.
            Next::WaitUntil(_) if q.closed => {
                let all = q.state.drain();
                return Some(all);
            }
            Next::WaitUntil(t) => {
                q = sh
                    .wake
                    .wait_timeout(q, t.saturating_duration_since(now))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        }
    }
}

fn run_batch(sh: &Shared, index: usize, batch: Vec<Entry<Job>>) {
    let n = sh.sessions.len();
    // Prefer an idle session; wait for this worker's own only when all are busy.
    let mut session = (0..n)
        .find_map(|k| sh.sessions[(index + k) % n].try_lock().ok())
        .unwrap_or_else(|| lock(&sh.sessions[index % n]));
    // A worker reruns a failed batch's requests itself: nothing comes back.
    let _ = run_entries(sh, &mut session, batch, false);
}

/// Runs jobs gathered on an HTTP thread (see `local`): on an idle session, split into
/// batches by the policy, for at most `INLINE_BUDGET_NS` of estimated inference; the rest,
/// or all when every session is busy, join the workers' queue instead, since an HTTP thread
/// must never block waiting for a session or run long enough to delay its other connections.
pub(super) fn run_here(sh: &Shared, jobs: Vec<Entry<Job>>) {
    let Some(mut session) = sh.sessions.iter().find_map(|s| s.try_lock().ok()) else {
        sh.to_workers(jobs);
        return;
    };
    let _inline = Inline::enter();
    let mut batches = State::new(Policy {
        capacity: usize::MAX,
        max_delay: Duration::ZERO,
        ..sh.policy
    });
    for e in jobs {
        let _ = batches.push(e);
    }
    let now = Instant::now();
    for e in batches.expire(now) {
        let _ = e.item.reply.send(Err(EngineError::DeadlineExceeded));
    }
    // Estimates decide what starts; the clock stops the turn once the budget is spent,
    // whatever the estimates said.
    let mut spent: u64 = 0;
    while let Next::Run(batch) = batches.next(now) {
        let rows = batch.iter().map(|e| e.rows).sum();
        let cost = sh.estimate(rows).unwrap_or(u64::MAX);
        let elapsed = u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let budget = sh.inline_budget_ns();
        if spent.saturating_add(cost) > budget || elapsed >= budget {
            drop(session);
            sh.to_workers(batch.into_iter().chain(batches.drain()));
            return;
        }
        spent = spent.saturating_add(cost);
        if let Some(failed) = run_entries(sh, &mut session, batch, true) {
            // A failed batch's requests are rerun one by one: on the workers, not here.
            drop(session);
            sh.to_workers(failed.into_iter().chain(batches.drain()));
            return;
        }
    }
}

/// Runs one batch. A batch of several requests that fails is rerun one request at a time, so
/// one request's bad values do not fail its batch-mates; `inline` (an HTTP thread) hands
/// those requests back instead, for the workers to rerun.
fn run_entries(
    sh: &Shared,
    session: &mut Unit,
    batch: Vec<Entry<Job>>,
    inline: bool,
) -> Option<Vec<Entry<Job>>> {
    // Nobody reads the answer of a client that went away or timed out: skip its rows.
    let live: Vec<Entry<Job>> = batch
        .into_iter()
        .filter(|e| !e.item.reply.is_closed())
        .collect();
    if live.is_empty() {
        return None;
    }
    let started = Instant::now();
    let rows: usize = live.iter().map(|e| e.rows).sum();
    sh.metrics.run(live.len(), rows);
    if live.len() == 1 {
        let e = live
            .into_iter()
            .next()
            .map(|e| (e.enqueued, e.deadline, e.item));
        if let Some((enqueued, deadline, job)) = e {
            let Job { frame, reply: tx } = job;
            // A function on an HTTP thread has a short deadline (`wasm::Inline`); a request
            // that overruns it goes to the workers, where the function has its whole limit.
            let spare = (inline && session.has_functions()).then(|| frame.clone());
            let gone = || tx.is_closed();
            let result = session.run_unless(frame, &gone);
            match (result, spare) {
                (Err(e), Some(frame)) if e.contains(OVERRAN_INLINE) => {
                    return Some(vec![Entry {
                        rows,
                        enqueued,
                        deadline,
                        item: Job { frame, reply: tx },
                        piece: false,
                    }]);
                }
                (result, _) => {
                    if result.is_ok() {
                        sh.measured(rows, started.elapsed());
                    }
                    reply(tx, result, enqueued, started);
                }
            }
        }
        return None;
    }
    let sizes: Vec<usize> = live.iter().map(|e| e.rows).collect();
    let (meta, frames): (Vec<(Instant, Instant, Reply)>, Vec<Frame>) = live
        .into_iter()
        .map(|e| ((e.enqueued, e.deadline, e.item.reply), e.item.frame))
        .unzip();
    let gone = || meta.iter().all(|(_, _, tx)| tx.is_closed());
    let pieces = combine::concat(&frames)
        .and_then(|f| session.run_unless(f, &gone))
        .and_then(|outputs| combine::split(outputs, &sizes));
    match pieces {
        Ok(pieces) => {
            sh.measured(rows, started.elapsed());
            for ((enqueued, _, tx), outputs) in meta.into_iter().zip(pieces) {
                reply(tx, Ok(outputs), enqueued, started);
            }
            None
        }
        Err(e) => {
            log::debug!(
                "a batch of {} requests failed ({e}); running them one by one",
                sizes.len()
            );
            let alone = meta.into_iter().zip(frames);
            if inline {
                let back = alone
                    .map(|((enqueued, deadline, reply), frame)| Entry {
                        rows: frame.rows,
                        enqueued,
                        deadline,
                        item: Job { frame, reply },
                        piece: false,
                    })
                    .collect();
                return Some(back);
            }
            for ((enqueued, _, tx), frame) in alone {
                let own_start = Instant::now();
                let gone = || tx.is_closed();
                let result = session.run_unless(frame, &gone);
                reply(tx, result, enqueued, own_start);
            }
            None
        }
    }
}

fn reply(tx: Reply, result: Result<Outputs, String>, enqueued: Instant, started: Instant) {
    let _ = tx.send(result.map_err(EngineError::Run).map(|outputs| Scored {
        outputs,
        queued: started.saturating_duration_since(enqueued),
        inference: started.elapsed(),
    }));
}
