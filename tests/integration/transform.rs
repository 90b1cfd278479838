//! `mlapp transform` on a folder: every input gets its `.out`, equal to Python onnxruntime's
//! answers line for line; finished outputs are skipped, interrupted ones redone, and a file
//! with a bad record fails alone (or gets placeholders).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::moto::{pairs, Moto};
use crate::common::{assert_csv_row, golden, model_dir, payload, run_bounded};

fn transform(input: &Path, output: &Path, extra: &[&str]) -> Output {
    transform_at(
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        extra,
        &[],
    )
}

/// `mlapp transform` from `input` to `output` (paths or s3:// URIs), with `envs` set.
fn transform_at(input: &str, output: &str, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let model = model_dir("xgboost");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlapp"));
    cmd.arg("transform")
        .args(["--model-dir", model.to_str().unwrap()])
        .args(["--input", input])
        .args(["--output", output])
        // Small chunks: many of them per file, scored out of order on two threads.
        .args(["--chunk-mb", "0.05", "--workers", "2"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied());
    run_bounded(&mut cmd, Duration::from_secs(60))
}

/// `n` example rows, cycling, joined by `eol`.
fn rows(n: usize, eol: &str) -> String {
    let text = String::from_utf8(payload("xgboost", "rows.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    (0..n)
        .map(|i| lines[i % lines.len()])
        .collect::<Vec<_>>()
        .join(eol)
}

fn check_csv_out(path: &Path, n: usize) {
    let gold = golden("xgboost");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        !text.ends_with('\n'),
        "{}: trailing newline",
        path.display()
    );
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), n, "{}", path.display());
    for (i, line) in lines.iter().enumerate() {
        assert_csv_row(&gold, line, i % 25, &path.display().to_string());
    }
}

#[test]
fn a_folder_is_transformed_skipping_finished_outputs_and_redoing_interrupted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    std::fs::write(input.join("a.csv"), rows(3000, "\n") + "\n").unwrap();
    std::fs::write(input.join("sub/b.csv"), rows(500, "\r\n")).unwrap();
    std::fs::write(input.join("c.csv"), rows(10, "\n")).unwrap();
    std::fs::write(input.join("d.csv"), rows(700, "\n")).unwrap();
    // c finished in an earlier run; d was interrupted while being written.
    std::fs::write(output.join("c.csv.out"), "finished earlier").unwrap();
    std::fs::write(output.join("d.csv.out.partial"), "0,0.5").unwrap();

    let run = transform(&input, &output, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 files done (4200 rows), 1 skipped"),
        "{stderr}"
    );
    check_csv_out(&output.join("a.csv.out"), 3000);
    check_csv_out(&output.join("sub/b.csv.out"), 500);
    check_csv_out(&output.join("d.csv.out"), 700);
    assert_eq!(
        std::fs::read_to_string(output.join("c.csv.out")).unwrap(),
        "finished earlier"
    );
    assert!(!output.join("d.csv.out.partial").exists());
}

#[test]
fn a_file_with_a_bad_record_fails_alone_or_gets_a_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    let mut bad: Vec<String> = rows(2000, "\n").lines().map(str::to_string).collect();
    bad[1233] = "1,2,3".into();
    std::fs::write(input.join("bad.csv"), bad.join("\n")).unwrap();
    std::fs::write(input.join("good.csv"), rows(100, "\n")).unwrap();

    let run = transform(&input, &output, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad.csv: row 1234: expected 64 values"),
        "{stderr}"
    );
    assert!(!output.join("bad.csv.out").exists());
    assert!(!output.join("bad.csv.out.partial").exists());
    check_csv_out(&output.join("good.csv.out"), 100);

    let run = transform(&input, &output, &["--bad-records", "placeholder"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(output.join("bad.csv.out")).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 2000);
    assert!(
        lines[1233].starts_with("ERROR: row 1234: expected 64 values"),
        "{}",
        lines[1233]
    );
    assert_csv_row(
        &golden("xgboost"),
        lines[1234],
        1234 % 25,
        "after the bad record",
    );
}

/// A failure early in a long file, while the reader waits for room to read ahead, ends the
/// job; it once left the reader waiting for ever (a race, so run several times).
#[test]
fn an_early_bad_record_in_a_long_file_ends_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    let mut bad: Vec<String> = rows(20_000, "\n").lines().map(str::to_string).collect();
    bad[3] = "1,2,3".into();
    std::fs::write(&input, bad.join("\n")).unwrap();
    for attempt in 0..8 {
        let output = dir.path().join(format!("out{attempt}"));
        let run = transform(&input, &output, &[]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{stderr}");
        assert!(stderr.contains("row 4: expected 64 values"), "{stderr}");
        assert!(!output.join("bad.csv.out").exists());
        assert!(!output.join("bad.csv.out.partial").exists());
    }
}

#[test]
fn json_lines_files_answer_in_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("x.jsonl"), dir.path().join("out"));
    let text = String::from_utf8(payload("xgboost", "rows.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let body: Vec<&str> = (0..1000).map(|i| lines[i % lines.len()]).collect();
    std::fs::write(&input, body.join("\n")).unwrap();
    let run = transform(
        &input,
        &output,
        &["--content-type", "application/jsonlines"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let gold = golden("xgboost");
    let answer = std::fs::read_to_string(output.join("x.jsonl.out")).unwrap();
    let out: Vec<&str> = answer.split('\n').collect();
    assert_eq!(out.len(), 1000);
    for (i, line) in out.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = &v["probabilities"];
        let csv = format!("{},{},{}", v["label"], p["0"], p["1"]);
        assert_csv_row(&gold, &csv, i % 25, "jsonl");
    }
}

#[test]
fn split_type_none_scores_each_file_as_one_body() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("doc.json"), payload("xgboost", "instances.json")).unwrap();
    let run = transform(
        &input,
        &output,
        &[
            "--split-type",
            "none",
            "--content-type",
            "application/json",
            "--accept",
            "application/json",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("doc.json.out")).unwrap())
            .unwrap();
    let gold = golden("xgboost");
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), gold["labels"].as_array().unwrap().len());
    for (i, p) in predictions.iter().enumerate() {
        let probs = &p["probabilities"];
        let line = format!("{},{},{}", p["label"], probs["0"], probs["1"]);
        assert_csv_row(&gold, &line, i, "split none");
    }
    // A line-split job cannot answer with one JSON document.
    let run = transform(&input, &output, &["--accept", "application/json"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("one line per record"));
}

/// S3 inputs and outputs, as in a Batch Transform job: every object under the input prefix
/// gives `<key>.out` under the output prefix, a finished output is skipped, and the answers
/// equal the golden predictions.
#[test]
fn s3_prefixes_in_and_out() {
    let moto = Moto::start();
    moto.create_bucket("data");
    moto.put("data", "in/a.csv", rows(300, "\n").into_bytes());
    moto.put("data", "in/day=2/b.csv", rows(1200, "\n").into_bytes());
    moto.put("data", "in/c.csv", rows(10, "\n").into_bytes());
    moto.put("data", "out/c.csv.out", b"finished earlier".to_vec());
    let env = moto.env();
    let work = tempfile::tempdir().unwrap();
    let work_arg = ["--work-dir", work.path().to_str().unwrap()];
    let run = transform_at("s3://data/in/", "s3://data/out", &work_arg, &pairs(&env));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 files done (1500 rows), 1 skipped"),
        "{stderr}"
    );
    let gold = golden("xgboost");
    for (key, n) in [("out/a.csv.out", 300), ("out/day=2/b.csv.out", 1200)] {
        let text = String::from_utf8(moto.get("data", key)).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), n, "{key}");
        for (i, line) in lines.iter().enumerate() {
            assert_csv_row(&gold, line, i % 25, key);
        }
    }
    assert_eq!(moto.get("data", "out/c.csv.out"), b"finished earlier");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "staged files left"
    );

    // One object in, a local folder out.
    let out = tempfile::tempdir().unwrap();
    let run = transform_at(
        "s3://data/in/a.csv",
        out.path().to_str().unwrap(),
        &work_arg,
        &pairs(&env),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    check_csv_out(&out.path().join("a.csv.out"), 300);

    let run = transform_at(
        "s3://data/nothing/",
        "s3://data/out",
        &work_arg,
        &pairs(&env),
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("no objects under s3://data/nothing/"),
        "{stderr}"
    );
}

/// Large outputs go up as multipart uploads; the object read back is the file.
#[test]
fn large_files_are_uploaded_in_parts() {
    let moto = Moto::start();
    moto.create_bucket("data");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.out");
    let bytes: Vec<u8> = (0..(40u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let store = mlapp::storage::S3Store::from_client(moto.client.clone());
    let uri = mlapp::storage::S3Uri::parse("s3://data/big/big.out")
        .unwrap()
        .unwrap();
    moto.rt.block_on(store.upload(&file, &uri)).unwrap();
    let head = moto
        .rt
        .block_on(
            moto.client
                .head_object()
                .bucket("data")
                .key("big/big.out")
                .send(),
        )
        .unwrap();
    // A multipart ETag ends with the part count.
    assert!(
        head.e_tag().unwrap_or_default().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );
    assert!(moto.get("data", "big/big.out") == bytes);
    let back = dir.path().join("back");
    let meta = moto.rt.block_on(store.download(&uri, &back)).unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    assert!(std::fs::read(&back).unwrap() == bytes);
}

/// A panic on the reading, a scoring or the writing thread fails the file with a message,
/// within a bound; a panicking scorer once left the job waiting for ever. The panic is
/// injected through a hook that only debug builds have.
#[test]
fn a_panicking_thread_fails_the_file_and_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    // Many chunks, more than the window, so the reader waits for room when a chunk is lost.
    std::fs::write(input.join("a.csv"), rows(5000, "\n")).unwrap();
    for (stage, want) in [
        ("scorer", "scoring the chunk starting at row"),
        ("reader", "the reading thread panicked"),
        ("writer", "the writing thread panicked"),
    ] {
        let run = transform_at(
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            &[],
            &[("MLAPP_TEST_PANIC", stage)],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{stage}: {stderr}");
        assert!(
            stderr.contains("1 failed") && stderr.contains(want),
            "{stage}: {stderr}"
        );
        assert!(stderr.contains("injected by MLAPP_TEST_PANIC"), "{stderr}");
        assert!(!output.join("a.csv.out").exists(), "{stage}");
        assert!(!output.join("a.csv.out.partial").exists(), "{stage}");
    }
}

/// Inputs that are links are scored like files; a link to a folder above is refused.
#[test]
fn linked_inputs_are_scored_and_link_loops_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let data = dir.path().join("elsewhere.csv");
    std::fs::write(&data, rows(300, "\n")).unwrap();
    std::fs::write(input.join("plain.csv"), rows(20, "\n")).unwrap();
    std::os::unix::fs::symlink(&data, input.join("sub/linked.csv")).unwrap();
    let run = transform(&input, &output, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("2 files done (320 rows)"), "{stderr}");
    check_csv_out(&output.join("sub/linked.csv.out"), 300);
    check_csv_out(&output.join("plain.csv.out"), 20);

    std::os::unix::fs::symlink("..", input.join("sub/up")).unwrap();
    let run = transform(&input, &dir.path().join("out2"), &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("a loop"), "{stderr}");
}
