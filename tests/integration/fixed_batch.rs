//! Fixed-batch models (`[1, F]` exports, tests/fixtures/logreg_fixed): requests of any size,
//! coalesced batches and `transform --bad-records placeholder` are run a batch at a time, and
//! get the answers the dynamic-batch model gives.

use std::process::Command;
use std::time::Duration;

use crate::batching::metric;
use crate::common::{assert_csv_row, golden, payload, repo, run_bounded, Server};

fn fixture() -> std::path::PathBuf {
    repo().join("tests/fixtures/logreg_fixed")
}

fn check_lines(body: &str, rows: usize, what: &str) {
    let gold = golden("logreg");
    let lines: Vec<&str> = body.split('\n').collect();
    assert_eq!(lines.len(), rows, "{what}: {body}");
    for (i, line) in lines.iter().enumerate() {
        assert_csv_row(&gold, line, i % 25, what);
    }
}

#[test]
fn coalesced_requests_of_several_rows_get_their_own_answers() {
    let s = Server::ready(
        &fixture(),
        &["--workers", "1", "--max-batch-delay-ms", "20"],
    );
    let body = payload("logreg", "rows.csv");
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                let r = s.post(Some("text/csv"), Some("text/csv"), &body);
                assert_eq!(r.status, 200, "{}", r.body);
                check_lines(&r.body, 25, "concurrent");
            });
        }
    });
    let m = s.get("/metrics").body;
    assert!(
        metric(&m, "mlapp_batch_requests_sum") > metric(&m, "mlapp_batch_requests_count"),
        "no run held more than one request, so coalescing was not exercised"
    );
    let r = s.get("/execution-parameters");
    assert!(
        r.body.contains("\"BatchStrategy\":\"MULTI_RECORD\""),
        "{}",
        r.body
    );
}

#[test]
fn transform_placeholders_work_for_a_fixed_batch_model() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    let text = String::from_utf8(payload("logreg", "rows.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "1,2,3";
    std::fs::write(input.join("rows.csv"), lines.join("\n")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlapp"));
    cmd.arg("transform")
        .args(["--model-dir", fixture().to_str().unwrap()])
        .args(["--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap()])
        .args(["--workers", "2", "--bad-records", "placeholder"])
        .env("RUST_LOG", "warn");
    let run = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = std::fs::read_to_string(output.join("rows.csv.out")).unwrap();
    let got: Vec<&str> = out.split('\n').collect();
    assert_eq!(got.len(), 25, "{out}");
    assert!(
        got[3].starts_with("ERROR: row 4: expected 64 values"),
        "{}",
        got[3]
    );
    let gold = golden("logreg");
    for (i, line) in got.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_csv_row(&gold, line, i, "transform");
    }
}

#[test]
fn a_fixed_batch_model_whose_outputs_do_not_follow_the_rows_takes_only_its_batch() {
    // tests/fixtures/fixed_reshape takes exactly 2 rows and flattens them into one output.
    let s = Server::ready(&repo().join("tests/fixtures/fixed_reshape"), &[]);
    // Neither Batch Transform strategy fits a model that takes exactly 2 rows: what was
    // configured is kept (SINGLE_RECORD is said only for a batch of exactly 1).
    let r = s.get("/execution-parameters");
    assert!(
        r.body.contains("\"BatchStrategy\":\"MULTI_RECORD\""),
        "{}",
        r.body
    );
    let r = s.post(Some("text/csv"), Some("text/csv"), b"1,2\n3,4\n");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "1.0,2.0\n3.0,4.0");
    // Any other count is the client's error, refused before a run, naming the batch.
    for body in [&b"1,2\n3,4\n5,6\n"[..], b"1,2\n"] {
        let r = s.post(Some("text/csv"), Some("text/csv"), body);
        assert_eq!(r.status, 422, "{}", r.body);
        let (code, msg) = r.error();
        assert_eq!(code, "wrong_shape");
        assert!(msg.contains("takes exactly 2 rows per request"), "{msg}");
    }
}
