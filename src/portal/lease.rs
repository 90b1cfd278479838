//! An item's lease, renewed from the moment it is claimed (while the model loads, while the
//! file is scored) until the item is completed or given back. What the renewals learn ends the
//! scoring early: the lease was lost, the job stopped or failed, or this replica shuts down.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::store::{Claimed, Store, StoreError};
use super::JobStatus;

/// Why scoring was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Still ours.
    No,
    /// Another claim holds the item: nothing we found may be written.
    Lost,
    /// The job is no longer running (stopped, failed): the item goes back unfinished.
    Job,
    /// This replica is shutting down: the item goes back for another.
    Shutdown,
    /// The store could not be reached to check the lease before writing: the item goes back.
    Store,
    /// Scoring made no progress for `STALLED`: the lease is left to run out, and another
    /// replica takes the item (a hung read or run here must not hold it for ever).
    Hung,
}

/// How long an item may make no progress before its lease is no longer renewed. Models load
/// and pieces score in far less; a read from a hung mount does not end.
const STALLED: Duration = Duration::from_secs(600);

pub struct Lease {
    state: Arc<AtomicU8>,
    /// Input bytes and records scored so far, reported with each renewal.
    pub progress: Arc<(AtomicU64, AtomicU64)>,
    /// Turns true when the scoring should stop.
    pub stop: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub fn start(
        store: Store,
        c: Claimed,
        lease: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Lease {
        let state = Arc::new(AtomicU8::new(Ended::No as u8));
        let progress = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let (tx, stop) = watch::channel(false);
        let (st, seen) = (Arc::clone(&state), Arc::clone(&progress));
        let task = tokio::spawn(async move {
            let every = lease / 3;
            let stalled = STALLED.max(lease * 3);
            let (mut last, mut since) = ((0, 0), std::time::Instant::now());
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = shutdown.wait_for(|&s| s) => {
                        st.store(Ended::Shutdown as u8, Ordering::SeqCst);
                        let _ = tx.send(true);
                        return;
                    }
                }
                let (bytes, rows) = (
                    seen.0.load(Ordering::Relaxed),
                    seen.1.load(Ordering::Relaxed),
                );
                if (bytes, rows) != last {
                    (last, since) = ((bytes, rows), std::time::Instant::now());
                } else if since.elapsed() >= stalled {
                    log::error!(
                        "portal: {} item {} made no progress for {:?}: its lease is left to run out",
                        c.job,
                        c.seq,
                        since.elapsed()
                    );
                    st.store(Ended::Hung as u8, Ordering::SeqCst);
                    let _ = tx.send(true);
                    return;
                }
                let ended = match renew(&store, &c, lease, rows, bytes).await {
                    Ok(e) => e,
                    // The store is unreachable: keep scoring; if the lease runs out meanwhile,
                    // the completion finds it lost.
                    Err(e) => {
                        log::warn!(
                            "portal: cannot renew the lease of {} item {}: {e}",
                            c.job,
                            c.seq
                        );
                        Ended::No
                    }
                };
                if ended != Ended::No {
                    st.store(ended as u8, Ordering::SeqCst);
                    let _ = tx.send(true);
                    return;
                }
            }
        });
        Lease {
            state,
            progress,
            stop,
            task,
        }
    }

    pub fn ended(&self) -> Ended {
        match self.state.load(Ordering::SeqCst) {
            x if x == Ended::Lost as u8 => Ended::Lost,
            x if x == Ended::Job as u8 => Ended::Job,
            x if x == Ended::Shutdown as u8 => Ended::Shutdown,
            x if x == Ended::Store as u8 => Ended::Store,
            x if x == Ended::Hung as u8 => Ended::Hung,
            _ => Ended::No,
        }
    }

    /// A handle that notes why scoring ended, for whoever finds out first (the check before
    /// an output is written, on the scoring thread).
    pub fn marker(&self) -> Marker {
        Marker(Arc::clone(&self.state))
    }
}

pub struct Marker(Arc<AtomicU8>);

impl Marker {
    pub fn set(&self, e: Ended) {
        self.0.store(e as u8, Ordering::SeqCst);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews the lease once; what it found.
pub async fn renew(
    store: &Store,
    c: &Claimed,
    lease: Duration,
    rows: u64,
    bytes: u64,
) -> Result<Ended, StoreError> {
    Ok(match store.renew(c, lease, rows, bytes).await? {
        None => Ended::Lost,
        Some(JobStatus::InProgress) => Ended::No,
        Some(_) => Ended::Job,
    })
}
