//! The threads pieces are parsed and encoded on: one per CPU, started on first use and kept.
//! Parsing is CPU work, so more threads than CPUs would only take turns; and each thread that
//! allocates gets an allocator arena of its own, so a pool that grows with the pieces in flight
//! (tokio's blocking pool goes up to 512 threads) spreads a stream's memory over many arenas
//! that each keep what they freed: a 110 MiB streamed body peaked 6 % higher that way.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

type Task = Box<dyn FnOnce() + Send>;

/// None when no thread could be started: tasks then go to tokio's blocking pool.
static POOL: OnceLock<Option<Sender<Task>>> = OnceLock::new();

fn pool() -> Option<&'static Sender<Task>> {
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let started = (0..crate::config::ServeConfig::cpus().max(1))
            .filter(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("mlapp-pieces-{i}"))
                    .spawn(move || serve(&rx))
                    .map_err(|e| log::error!("cannot start a thread for parsing pieces: {e}"))
                    .is_ok()
            })
            .count();
        (started > 0).then_some(tx)
    })
    .as_ref()
}

fn serve(rx: &Mutex<Receiver<Task>>) {
    loop {
        // The lock is held only while waiting; the task runs without it.
        let task = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match task {
            Ok(task) => task(),
            Err(_) => return,
        }
    }
}

/// Runs `f` on the pool; a panic there becomes its message (and the thread goes on).
pub(super) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let Some(pool) = pool() else {
        return super::blocking(f).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task: Task = Box::new(move || {
        // Its piece was cancelled (the request went away): nothing to do.
        if tx.is_closed() {
            return;
        }
        let out = catch_unwind(AssertUnwindSafe(f))
            .map_err(|p| format!("panicked: {}", crate::error::panic_message(p.as_ref())));
        let _ = tx.send(out);
    });
    pool.send(task)
        .map_err(|_| "the threads that parse pieces are gone".to_string())?;
    rx.await
        .map_err(|_| "the threads that parse pieces are gone".to_string())?
}
