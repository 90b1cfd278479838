//! What one kind of work must not do to another: inference must not hold `/ping` or other
//! connections behind it, and bodies being read are bounded in bytes, not only in requests.

use std::time::{Duration, Instant};

use crate::common::{repo, Server};

/// `rows` rows for the slow fixture (4 float features).
fn slow_rows(rows: usize) -> Vec<u8> {
    (0..rows)
        .map(|r| format!("{},{},0.5,-0.25\n", r % 7, (r * 3) % 5))
        .collect::<String>()
        .into_bytes()
}

fn percentile(mut xs: Vec<Duration>, p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn ping_does_not_wait_behind_small_requests_on_a_slow_model() {
    // One HTTP thread: whatever runs on it delays every ping. Each request is small (16 rows,
    // well within one batch, so it qualifies for the HTTP-thread path) but takes about 100 ms
    // of inference on the slow fixture.
    let s = Server::ready(
        &repo().join("tests/fixtures/slow"),
        &["--http-workers", "1", "--workers", "1"],
    );
    let body = slow_rows(16);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (pings, took) = std::thread::scope(|scope| {
        let load: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut took = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = s.post(Some("text/csv"), None, &body);
                        assert_eq!(r.status, 200, "{}", r.body);
                        took.push(t.elapsed());
                    }
                    took
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut pings = Vec::new();
        for _ in 0..60 {
            let t = Instant::now();
            assert_eq!(s.get("/ping").status, 200);
            pings.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(15));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let took: Vec<Duration> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (pings, took)
    });
    let request = percentile(took, 0.5);
    let ping = percentile(pings, 0.9);
    // Inline, the thread is busy running ~100 ms batches nearly all the time, and a ping waits
    // for half a run on average. Handed off, a ping waits for nothing but the CPU.
    assert!(
        request >= Duration::from_millis(40),
        "the fixture is not slow here ({request:?} per request): the test shows nothing"
    );
    assert!(
        ping * 4 < request,
        "ping p90 {ping:?} against {request:?} per request"
    );
}
