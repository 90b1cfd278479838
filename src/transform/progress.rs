//! How far `mlapp transform` is, on stderr.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress on stderr: a line redrawn twice a second on a terminal, a log line every 10 s
/// otherwise.
pub(super) struct Progress {
    total: u64,
    done: u64,
    rows: u64,
    started: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    pub(super) fn new(total: u64) -> Self {
        let now = Instant::now();
        Self {
            total: total.max(1),
            done: 0,
            rows: 0,
            started: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn skip(&mut self, bytes: u64) {
        self.total = self.total.saturating_sub(bytes).max(1);
    }

    pub(super) fn advance(&mut self, bytes: u64, rows: u64) {
        self.done = (self.done + bytes).min(self.total);
        self.rows += rows;
        let every = if self.tty { 500 } else { 10_000 };
        if self.last.elapsed() >= Duration::from_millis(every) {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = self.rows as f64 / secs;
        let frac = self.done as f64 / self.total as f64;
        let eta = if frac > 0.0 {
            secs * (1.0 - frac) / frac
        } else {
            0.0
        };
        let line = format!(
            "{:5.1}%  {} rows  {:.0} rows/s  ETA {:.0} s",
            100.0 * frac,
            self.rows,
            rate,
            eta
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            log::info!("{line}");
        }
    }

    pub(super) fn finish(&mut self) {
        self.done = self.total;
        self.show();
        if self.tty {
            eprintln!();
        }
    }
}
