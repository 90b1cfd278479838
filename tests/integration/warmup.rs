//! Warm-up on rows the model accepts: a scikit-learn pipeline with the default
//! `OneHotEncoder()` (which fails on any category it was not trained on) becomes ready with the
//! rows shipped in its folder, and without them too (the synthetic rows it refuses are a
//! warning, and batching is turned off); shipped rows that do not run fail the load by name.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::batching::metric;
use crate::common::{assert_csv_row, golden, model_dir, payload, Server};

/// Starts a server for `dir` with its log in a file, waits for /ping 200, and returns the
/// server and the log so far.
fn ready_with_log(dir: &Path, extra: &[&str]) -> (Server, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut args = vec!["--model-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let s = Server::start_logging(
        Some("serve"),
        &args,
        &[("RUST_LOG", "info")],
        Stdio::from(log.reopen().unwrap()),
    );
    s.wait_ready(Duration::from_secs(60));
    (s, log)
}

fn read(log: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(log.path()).unwrap()
}

/// The strict pipeline's folder without its warm-up rows.
fn strict_without_rows() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.onnx", "mlapp.json"] {
        std::fs::copy(model_dir("pipeline_strict").join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn answers_match_python(s: &Server) {
    let r = s.post(
        Some("text/csv"),
        Some("text/csv"),
        &payload("pipeline_strict", "rows.csv"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let gold = golden("pipeline_strict");
    for (i, line) in r.body.split('\n').enumerate() {
        assert_csv_row(&gold, line, i, "pipeline_strict");
    }
}

#[test]
fn a_strict_one_hot_pipeline_is_ready_with_its_shipped_rows_and_batches() {
    let (s, log) = ready_with_log(&model_dir("pipeline_strict"), &[]);
    answers_match_python(&s);
    let text = read(&log);
    assert!(text.contains("batching on"), "{text}");
    assert!(!text.contains("refused"), "{text}");
    let info = s.get("/info").json();
    assert_eq!(info["model"]["batching"], "on", "{info}");
    let warmup = info["model"]["warmup"].as_str().unwrap();
    assert!(
        warmup.starts_with("8 rows from") && warmup.ends_with("warmup.jsonl: ran"),
        "{warmup}"
    );
}

#[test]
fn without_shipped_rows_a_refused_synthetic_warmup_is_a_warning_and_batching_is_off() {
    let tmp = strict_without_rows();
    let (s, log) = ready_with_log(
        tmp.path(),
        &["--workers", "1", "--max-batch-delay-ms", "20"],
    );
    answers_match_python(&s);
    let text = read(&log);
    assert!(
        text.contains("WARN")
            && text.contains("synthetic rows: ONNX Runtime refused them")
            && text.contains("Unknown Category"),
        "{text}"
    );
    assert!(
        text.contains("batching off: the warm-up could not check that outputs follow the rows"),
        "{text}"
    );
    let info = s.get("/info").json();
    assert!(
        info["model"]["batching"]
            .as_str()
            .unwrap()
            .starts_with("off: the warm-up could not check"),
        "{info}"
    );
    assert!(
        info["model"]["warmup"]
            .as_str()
            .unwrap()
            .contains("ONNX Runtime refused them"),
        "{info}"
    );
    // Batching off: concurrent requests each run alone.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| answers_match_python(&s));
        }
    });
    let m = s.get("/metrics").body;
    assert_eq!(
        metric(&m, "mlapp_batch_requests_count"),
        metric(&m, "mlapp_batch_requests_sum"),
        "a run held more than one request"
    );
}

#[test]
fn shipped_rows_that_do_not_run_or_decode_fail_the_load_by_name() {
    let tmp = strict_without_rows();
    let rows = String::from_utf8(payload("pipeline_strict", "records.jsonl")).unwrap();
    let first = rows.lines().next().unwrap();
    // A city the encoder never saw: real rows must run, so this is the model's failure.
    std::fs::write(
        tmp.path().join("warmup.jsonl"),
        first.replacen("\"city\": \"", "\"city\": \"Atlantis", 1),
    )
    .unwrap();
    let s = Server::start(&["--model-dir", tmp.path().to_str().unwrap()]);
    let reason = s.failure();
    assert!(
        reason.contains("warm-up run failed")
            && reason.contains("warmup.jsonl")
            && reason.contains("Unknown Category"),
        "{reason}"
    );
    drop(s);

    let mut bad: serde_json::Value = serde_json::from_str(first).unwrap();
    bad["price_tier"] = "high".into();
    std::fs::write(tmp.path().join("warmup.jsonl"), format!("{first}\n{bad}\n")).unwrap();
    let s = Server::start(&["--model-dir", tmp.path().to_str().unwrap()]);
    let reason = s.failure();
    assert!(
        reason.contains("warmup.jsonl") && reason.contains("row 2"),
        "{reason}"
    );
}

#[test]
fn inspect_reports_the_warmup() {
    let inspect = |dir: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .arg("inspect")
            .arg(dir)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let shipped = inspect(&model_dir("pipeline_strict"));
    assert!(
        shipped.contains("warm-up: 8 rows from") && shipped.contains("warmup.jsonl: ran"),
        "{shipped}"
    );
    assert!(shipped.contains("batching on"), "{shipped}");
    let tmp = strict_without_rows();
    let synthetic = inspect(tmp.path());
    assert!(
        synthetic.contains("synthetic rows: ONNX Runtime refused them")
            && synthetic.contains("batching off"),
        "{synthetic}"
    );
}
