//! Coalesced runs: concurrent requests share ONNX Runtime runs, and each still gets exactly
//! its own rows' predictions, equal to Python onnxruntime's (examples/gender/golden).

use std::sync::Barrier;

use crate::common::{assert_csv_row, golden, model_dir, payload, Server};

/// The `/metrics` value of the series written exactly as `series` (name and labels).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// With `window`, one session and a 20 ms batching window on the worker threads make
/// coalescing certain; without, requests are gathered on the HTTP threads per event-loop
/// turn, where how many share a run depends on timing, so only the answers are checked.
fn concurrent_requests_get_their_own_rows(model: &str, window: bool) {
    let args: &[&str] = if window {
        &["--workers", "1", "--max-batch-delay-ms", "20"]
    } else {
        &[]
    };
    let s = Server::ready(&model_dir(model), args);
    let text = String::from_utf8(payload(model, "rows.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let gold = golden(model);
    const CLIENTS: usize = 64;
    // Client k sends 1 to 3 rows starting at row k, so the batches mix request sizes.
    let rows_of =
        |k: usize| -> Vec<usize> { (0..1 + k % 3).map(|j| (k + j) % lines.len()).collect() };
    let barrier = Barrier::new(CLIENTS);
    let answers: Vec<(usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let (s, barrier, lines) = (&s, &barrier, &lines);
                scope.spawn(move || {
                    let body: String = rows_of(k)
                        .iter()
                        .map(|&r| format!("{}\n", lines[r]))
                        .collect();
                    barrier.wait();
                    let r = s.post(Some("text/csv"), Some("text/csv"), body.as_bytes());
                    assert_eq!(r.status, 200, "client {k}: {}", r.body);
                    (k, r.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, body) in answers {
        let rows = rows_of(k);
        let got: Vec<&str> = body.split('\n').collect();
        assert_eq!(got.len(), rows.len(), "client {k}: {body}");
        for (line, &r) in got.iter().zip(&rows) {
            assert_csv_row(&gold, line, r, &format!("client {k}"));
        }
    }
    let m = s.get("/metrics").body;
    let runs = metric(&m, "mlapp_batch_requests_count");
    let requests = metric(&m, "mlapp_batch_requests_sum");
    assert!(requests >= CLIENTS as f64, "{requests} requests counted");
    if window {
        assert!(
            runs < requests / 2.0,
            "{requests} requests in {runs} runs: requests were not coalesced"
        );
    }
}

#[test]
fn concurrent_requests_get_their_own_rows_zipmap_classifier() {
    concurrent_requests_get_their_own_rows("mlp", true);
}

#[test]
fn concurrent_requests_get_their_own_rows_multi_input_pipeline() {
    concurrent_requests_get_their_own_rows("pipeline", true);
}

#[test]
fn concurrent_requests_batched_on_the_http_threads_get_their_own_rows() {
    concurrent_requests_get_their_own_rows("mlp", false);
    concurrent_requests_get_their_own_rows("xgboost", false);
}

#[test]
fn a_model_whose_outputs_do_not_follow_the_rows_is_not_batched() {
    // The fragile fixture reshapes to 4 rows: combining two 2-row requests into one run
    // would give each the other's predictions. It must run each request alone.
    let dir = crate::common::repo().join("tests/fixtures/fragile");
    let s = Server::ready(&dir, &["--workers", "1", "--max-batch-delay-ms", "20"]);
    let replies: Vec<(usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=8)
            .map(|k| {
                let s = &s;
                scope.spawn(move || {
                    let body = format!("{k},{k}\n").repeat(4);
                    let r = s.post(Some("text/csv"), Some("text/csv"), body.as_bytes());
                    assert_eq!(r.status, 200, "{}", r.body);
                    (k, r.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, body) in replies {
        assert_eq!(
            body,
            format!("{k}.0,{k}.0\n").repeat(4).trim_end(),
            "client {k}"
        );
    }
    let m = s.get("/metrics").body;
    assert_eq!(
        metric(&m, "mlapp_batch_requests_count"),
        metric(&m, "mlapp_batch_requests_sum"),
        "a run held more than one request"
    );
}
