//! The batching policy as a pure state machine: no threads, no clocks of its own, so every
//! decision (what runs next, what waits, what is refused, what expired) is unit-tested.
//!
//! Policy: requests run in arrival order. When a worker asks, the oldest requests are
//! coalesced up to `max_rows`; with `max_delay` zero the batch runs at once with whatever is
//! queued (no added latency at low load), otherwise an unfilled batch waits until its oldest
//! request is `max_delay` old. A request larger than `max_rows` runs alone. A request whose
//! deadline passed while queued is handed back as expired, never run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Rows one run may hold when requests are coalesced.
    pub max_rows: usize,
    /// How long an unfilled batch may wait for more requests.
    pub max_delay: Duration,
    /// Requests that may wait; beyond that `push` refuses.
    pub capacity: usize,
    /// False for models whose outputs do not follow the batch dimension: one request per run.
    pub combine: bool,
    /// Most inference an HTTP thread may run in one event-loop turn (`pool::run_here`).
    pub inline_budget: Duration,
}

#[derive(Debug)]
pub struct Entry<T> {
    pub rows: usize,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub item: T,
    /// A piece of a large input (`push_piece`): not counted against the capacity.
    pub piece: bool,
}

#[derive(Debug)]
pub enum Next<T> {
    /// Nothing queued.
    Idle,
    /// Something is queued but the policy waits for more until then.
    WaitUntil(Instant),
    /// Run these together, in this order.
    Run(Vec<Entry<T>>),
}

#[derive(Debug)]
pub struct State<T> {
    policy: Policy,
    queue: VecDeque<Entry<T>>,
}

impl<T> State<T> {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            queue: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a request, or hands it back when the queue is full.
    pub fn push(&mut self, entry: Entry<T>) -> Result<(), Entry<T>> {
        let cap = self.policy.capacity;
        // Pieces are counted only when the queue looks full: rare, and then O(queue).
        if self.queue.len() >= cap
            && self.queue.len() - self.queue.iter().filter(|e| e.piece).count() >= cap
        {
            return Err(entry);
        }
        self.queue.push_back(entry);
        Ok(())
    }

    /// Queues one piece of an admitted request, whatever the queue holds: the request was
    /// counted against the capacity when admitted, and its pieces in flight are bounded by
    /// the scorer's window (`stream::window`).
    pub fn push_piece(&mut self, mut entry: Entry<T>) {
        entry.piece = true;
        self.queue.push_back(entry);
    }

    /// Drops the requests nobody waits for any more (`gone`), so that a cancelled or failed
    /// input's pieces are not run for nothing.
    pub fn forget(&mut self, gone: impl Fn(&T) -> bool) {
        self.queue.retain(|e| !gone(&e.item));
    }

    /// Removes every request whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Entry<T>> {
        if !self.queue.iter().any(|e| e.deadline <= now) {
            return Vec::new();
        }
        let (expired, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|e| e.deadline <= now);
        self.queue = kept;
        expired.into()
    }

    /// Removes everything (shutdown).
    pub fn drain(&mut self) -> Vec<Entry<T>> {
        self.queue.drain(..).collect()
    }

    /// What a free worker should do now. Call `expire` first: this does not look at deadlines.
    pub fn next(&mut self, now: Instant) -> Next<T> {
        let Some(head) = self.queue.front() else {
            return Next::Idle;
        };
        let p = self.policy;
        if !p.combine || head.rows >= p.max_rows {
            return Next::Run(self.queue.pop_front().into_iter().collect());
        }
        // Count the FIFO prefix that fits; never skip over a request to fill the batch, so a
        // large request behind small ones runs next rather than waiting for a gap.
        let mut rows = 0;
        let mut take = 0;
        for e in &self.queue {
            if rows + e.rows > p.max_rows {
                break;
            }
            rows += e.rows;
            take += 1;
        }
        let full = rows == p.max_rows || take < self.queue.len();
        let ready_at = head.enqueued + p.max_delay;
        if !full && now < ready_at {
            return Next::WaitUntil(ready_at);
        }
        Next::Run(self.queue.drain(..take).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_rows: usize, delay_ms: u64) -> Policy {
        Policy {
            max_rows,
            max_delay: Duration::from_millis(delay_ms),
            capacity: 4,
            combine: true,
            inline_budget: Duration::ZERO,
        }
    }

    fn entry(t0: Instant, rows: usize, id: u32) -> Entry<u32> {
        Entry {
            rows,
            enqueued: t0,
            deadline: t0 + Duration::from_secs(10),
            item: id,
            piece: false,
        }
    }

    fn ids(next: Next<u32>) -> Vec<u32> {
        match next {
            Next::Run(batch) => batch.into_iter().map(|e| e.item).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn pieces_pass_the_capacity_and_forgotten_requests_leave() {
        let t0 = Instant::now();
        let mut s = State::new(policy(100, 0));
        for id in 0..4 {
            assert!(s.push(entry(t0, 1, id)).is_ok());
        }
        assert!(s.push(entry(t0, 1, 4)).is_err(), "capacity 4");
        s.push_piece(entry(t0, 1, 5));
        assert_eq!(s.len(), 5);
        // Pieces do not take the room of requests: the queue holds 4 besides them.
        assert!(s.push(entry(t0, 1, 6)).is_err());
        let mut fresh = State::new(policy(100, 0));
        fresh.push_piece(entry(t0, 1, 9));
        fresh.push_piece(entry(t0, 1, 9));
        for id in 0..4 {
            assert!(fresh.push(entry(t0, 1, id)).is_ok(), "{id}");
        }
        assert!(fresh.push(entry(t0, 1, 4)).is_err());
        s.forget(|id| id % 2 == 1);
        assert_eq!(ids(s.next(t0)), [0, 2]);
    }

    #[test]
    fn an_empty_queue_is_idle() {
        let mut s = State::<u32>::new(policy(8, 0));
        assert!(matches!(s.next(Instant::now()), Next::Idle));
    }

    #[test]
    fn runs_at_once_with_whatever_is_queued_when_there_is_no_delay() {
        let t0 = Instant::now();
        let mut s = State::new(policy(8, 0));
        s.push(entry(t0, 1, 1)).unwrap();
        s.push(entry(t0, 2, 2)).unwrap();
        assert_eq!(ids(s.next(t0)), vec![1, 2]);
        assert!(s.is_empty());
    }

    #[test]
    fn coalesces_in_arrival_order_up_to_max_rows_without_skipping() {
        let t0 = Instant::now();
        let mut s = State::new(policy(8, 0));
        for (id, rows) in [(1, 3), (2, 4), (3, 2), (4, 1)] {
            s.push(entry(t0, rows, id)).unwrap();
        }
        // 3 + 4 fit; 2 would pass 8, and 1 behind it is not taken ahead of it (fairness).
        assert_eq!(ids(s.next(t0)), vec![1, 2]);
        assert_eq!(ids(s.next(t0)), vec![3, 4]);
        assert!(matches!(s.next(t0), Next::Idle));
    }

    #[test]
    fn a_request_larger_than_max_rows_runs_alone() {
        let t0 = Instant::now();
        let mut s = State::new(policy(8, 0));
        s.push(entry(t0, 1, 1)).unwrap();
        s.push(entry(t0, 100, 2)).unwrap();
        s.push(entry(t0, 1, 3)).unwrap();
        assert_eq!(ids(s.next(t0)), vec![1]);
        assert_eq!(ids(s.next(t0)), vec![2]);
        assert_eq!(ids(s.next(t0)), vec![3]);
    }

    #[test]
    fn a_delay_holds_an_unfilled_batch_until_the_oldest_is_old_enough() {
        let t0 = Instant::now();
        let mut s = State::new(policy(8, 5));
        s.push(entry(t0, 2, 1)).unwrap();
        let later = t0 + Duration::from_millis(2);
        s.push(entry(later, 2, 2)).unwrap();
        match s.next(later) {
            Next::WaitUntil(t) => assert_eq!(t, t0 + Duration::from_millis(5)),
            other => panic!("expected a wait, got {other:?}"),
        }
        assert_eq!(ids(s.next(t0 + Duration::from_millis(5))), vec![1, 2]);
    }

    #[test]
    fn a_delay_does_not_hold_a_full_batch() {
        let t0 = Instant::now();
        let mut s = State::new(policy(4, 50));
        s.push(entry(t0, 2, 1)).unwrap();
        s.push(entry(t0, 2, 2)).unwrap();
        assert_eq!(ids(s.next(t0)), vec![1, 2]);
        // Nor one whose next request would not fit.
        s.push(entry(t0, 3, 3)).unwrap();
        s.push(entry(t0, 3, 4)).unwrap();
        assert_eq!(ids(s.next(t0)), vec![3]);
    }

    #[test]
    fn without_combining_each_request_runs_alone() {
        let t0 = Instant::now();
        let mut s = State::new(Policy {
            combine: false,
            ..policy(8, 50)
        });
        s.push(entry(t0, 1, 1)).unwrap();
        s.push(entry(t0, 1, 2)).unwrap();
        assert_eq!(ids(s.next(t0)), vec![1]);
        assert_eq!(ids(s.next(t0)), vec![2]);
    }

    #[test]
    fn a_full_queue_refuses_and_hands_the_request_back() {
        let t0 = Instant::now();
        let mut s = State::new(policy(8, 0));
        for id in 0..4 {
            s.push(entry(t0, 1, id)).unwrap();
        }
        let refused = s.push(entry(t0, 1, 9)).unwrap_err();
        assert_eq!(refused.item, 9);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn expired_requests_are_removed_and_never_batched() {
        let t0 = Instant::now();
        let mut s = State::new(policy(8, 0));
        s.push(entry(t0, 1, 1)).unwrap();
        s.push(Entry {
            deadline: t0 + Duration::from_millis(1),
            ..entry(t0, 1, 2)
        })
        .unwrap();
        s.push(entry(t0, 1, 3)).unwrap();
        let now = t0 + Duration::from_millis(1);
        let expired: Vec<u32> = s.expire(now).into_iter().map(|e| e.item).collect();
        assert_eq!(expired, vec![2]);
        assert_eq!(ids(s.next(now)), vec![1, 3]);
    }
}
