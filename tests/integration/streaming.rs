//! The one streaming scorer (`src/stream`) through each of its entry points: a large body
//! read whole, a Batch Transform body scored as it arrives, and `mlapp transform` files. Cut
//! into many small pieces scored in parallel, every input gets the bytes it gets scored as
//! one piece (or, for a body small enough, by the plain request path): answers, placeholder
//! lines and error messages alike. A piece that panics, a request cancelled half way and a
//! large file each end as they should.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::batching::metric;
use crate::common::{model_dir, payload, run_bounded, xgboost_rows, Server};

/// Pieces of 4 KiB: about eight rows each, so a test body of 150 rows is ~20 pieces.
const SMALL: &str = "0.004";

fn example_lines(file: &str) -> Vec<String> {
    String::from_utf8(payload("xgboost", file))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The inputs: every line ending, blank lines, JSON Lines, and bad records of each kind.
fn inputs() -> Vec<(String, &'static str, Vec<u8>)> {
    let csv = example_lines("rows.csv");
    let jsonl = example_lines("rows.jsonl");
    let rows = |lines: &[String], n: usize| -> Vec<String> {
        (0..n).map(|i| lines[i % lines.len()].clone()).collect()
    };
    let join = |lines: &[String], eol: &str, last: bool| {
        let mut s = lines.join(eol);
        if last {
            s.push_str(eol);
        }
        s.into_bytes()
    };
    let mut out = Vec::new();
    for (name, eol) in [("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")] {
        let good = rows(&csv, 150);
        out.push((format!("csv {name}"), "text/csv", join(&good, eol, true)));
        let mut bad = good.clone();
        let mut cells: Vec<String> = bad[70].split(',').map(str::to_string).collect();
        cells[5] = "abc".into();
        bad[70] = cells.join(",");
        bad[111] = "1,2,3".into();
        out.push((
            format!("csv {name}, bad"),
            "text/csv",
            join(&bad, eol, false),
        ));
    }
    let mut blanks = rows(&csv, 150);
    blanks.insert(40, String::new());
    blanks.insert(99, String::new());
    out.push((
        "csv, blank lines".into(),
        "text/csv",
        join(&blanks, "\n", true),
    ));
    let good = rows(&jsonl, 150);
    out.push((
        "jsonl".into(),
        "application/jsonlines",
        join(&good, "\n", false),
    ));
    let mut bad = good.clone();
    bad[64] = "[1, 2,".into();
    bad[120] = "{\"nope\": 1}".into();
    bad.insert(30, "   ".into());
    out.push((
        "jsonl, bad".into(),
        "application/jsonlines",
        join(&bad, "\n", true),
    ));
    out
}

/// `mlapp transform` of the xgboost example from `input` to `output`.
fn transform_cmd(input: &Path, output: &Path) -> Command {
    let model = model_dir("xgboost");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlapp"));
    cmd.arg("transform")
        .args(["--model-dir", model.to_str().unwrap()])
        .args(["--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap()])
        .env("RUST_LOG", "warn");
    cmd
}

fn transform(input: &Path, output: &Path, accept: &str, ctype: &str, extra: &[&str]) -> String {
    let mut cmd = transform_cmd(input, output);
    cmd.args(["--content-type", ctype, "--accept", accept])
        .args(["--chunk-mb", SMALL, "--workers", "2"])
        .args(extra);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_entry_point_gives_the_one_piece_answer_whatever_the_piece_size() {
    let model = model_dir("xgboost");
    let dir = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Placeholder answers are also checked against what does not go through the pieces at
    // all: the plain request path's answers to the same inputs without the bad records.
    let plain = Server::ready(&model, &["--chunk-mb", "64"]);
    let good_answers: std::collections::HashMap<(String, &str), String> = inputs()
        .into_iter()
        .filter(|(name, _, _)| !name.contains("bad"))
        .flat_map(|(name, ctype, body)| {
            ["text/csv", "application/jsonlines"].map(|accept| {
                let r = plain.post(Some(ctype), Some(accept), &body);
                assert_eq!(r.status, 200, "{name}: {}", r.body);
                ((name.clone(), accept), r.body)
            })
        })
        .collect();
    for policy in ["fail", "placeholder"] {
        let common = ["--model-dir", dir, "--bad-records", policy];
        let start = |extra: &[&str]| {
            let mut args = common.to_vec();
            args.extend_from_slice(extra);
            let s = Server::start(&args);
            s.wait_ready(Duration::from_secs(60));
            s
        };
        // The reference: one piece (or the plain request path for a body read whole).
        let whole = start(&["--chunk-mb", "64"]);
        let pieces = start(&["--chunk-mb", SMALL]);
        let streamed = start(&["--batch", "--chunk-mb", SMALL]);
        for (name, ctype, body) in inputs() {
            for accept in ["text/csv", "application/jsonlines", "application/json"] {
                let what = format!("{policy}: {name} -> {accept}");
                let want = whole.post(Some(ctype), Some(accept), &body);
                let bad = name.contains("bad");
                if bad && policy == "fail" {
                    assert!([400, 422].contains(&want.status), "{what}: {}", want.body);
                } else {
                    assert_eq!(want.status, 200, "{what}: {}", want.body);
                    let lines = want.body.matches('\n').count() + 1;
                    if accept != "application/json" {
                        assert_eq!(lines, 150, "{what}");
                    }
                }
                if bad && policy == "placeholder" && accept != "application/json" {
                    let good = name.trim_end_matches(", bad").to_string();
                    let good = &good_answers[&(good, accept)];
                    let bad_rows = if ctype == "text/csv" {
                        [70, 111]
                    } else {
                        [64, 120]
                    };
                    for (i, (got, want)) in want.body.split('\n').zip(good.split('\n')).enumerate()
                    {
                        if bad_rows.contains(&i) {
                            let placeholder = if accept == "text/csv" {
                                format!("ERROR: row {}", i + 1)
                            } else {
                                format!("{{\"error\":\"row {}", i + 1)
                            };
                            assert!(got.starts_with(&placeholder), "{what}: line {i}: {got}");
                        } else {
                            assert_eq!(got, want, "{what}: line {i}");
                        }
                    }
                }
                for (how, s) in [("read whole", &pieces), ("streamed", &streamed)] {
                    let got = s.post(Some(ctype), Some(accept), &body);
                    assert_eq!(
                        (got.status, &got.body),
                        (want.status, &want.body),
                        "{what}, {how}"
                    );
                }
                if accept == "application/json" {
                    continue; // transform answers one line per record
                }
                let input = tmp.path().join("in.txt");
                std::fs::write(&input, &body).unwrap();
                let output = tmp.path().join(format!("out-{policy}-{}", accept.len()));
                let _ = std::fs::remove_dir_all(&output);
                let stderr = transform(&input, &output, accept, ctype, &["--bad-records", policy]);
                let answer = std::fs::read_to_string(output.join("in.txt.out"));
                if want.status == 200 {
                    assert_eq!(
                        answer.ok().as_ref(),
                        Some(&want.body),
                        "{what}, transform: {stderr}"
                    );
                } else {
                    assert!(answer.is_err(), "{what}, transform wrote an answer");
                    let message = want.error().1;
                    assert!(
                        stderr.contains(&message),
                        "{what}: {message:?} not in {stderr}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_piece_that_panics_fails_its_request_and_nothing_else() {
    let model = model_dir("xgboost");
    let s = Server::start_with(
        Some("serve"),
        &["--model-dir", model.to_str().unwrap(), "--chunk-mb", SMALL],
        &[("MLAPP_TEST_PANIC", "scorer")],
    );
    s.wait_ready(Duration::from_secs(60));
    for _ in 0..3 {
        let r = s.post(Some("text/csv"), Some("text/csv"), &xgboost_rows(200));
        assert_eq!(r.status, 500, "{}", r.body);
        let (code, message) = r.error();
        assert_eq!(code, "internal_error");
        assert!(
            message.starts_with("scoring the chunk starting at row ")
                && message.contains("injected by MLAPP_TEST_PANIC"),
            "{message}"
        );
        // A small body does not go through the pieces: served.
        let r = s.post(Some("text/csv"), Some("text/csv"), &xgboost_rows(3));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let m = s.get("/metrics").body;
    assert_eq!(metric(&m, "mlapp_requests_in_flight"), 0.0);
}

/// Waits (up to `limit`) until a request of `rows` rows is answered again after `what` went
/// away: meanwhile only 503 (its admission not yet released) is acceptable.
fn served_again(s: &Server, rows: usize, limit: Duration, what: &str) {
    let until = Instant::now() + limit;
    loop {
        let r = s.post(Some("text/csv"), Some("text/csv"), &xgboost_rows(rows));
        if r.status == 200 {
            assert_eq!(r.body.split('\n').count(), rows);
            return;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(Instant::now() < until, "{what} still holds its admission");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that goes away half way through a streamed body: its pieces are dropped and its
/// admission released. With room for one request in flight, a leaked admission would refuse
/// every request after it.
#[test]
fn a_cancelled_stream_releases_its_admission() {
    let model = model_dir("xgboost");
    let s = Server::ready(
        &model,
        &["--batch", "--chunk-mb", "0.05", "--queue-capacity", "1"],
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(&addr).unwrap();
        conn.write_all(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nAccept: text/csv\r\nContent-Length: 50000000\r\n\r\n",
        )
        .unwrap();
        conn.write_all(&xgboost_rows(4000)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(conn);
        served_again(&s, 500, Duration::from_secs(10), "the cancelled request");
    }
    let m = s.get("/metrics").body;
    assert_eq!(metric(&m, "mlapp_requests_in_flight"), 0.0);
}

/// A request whose deadline passes while its pieces are scored gets 504, and its pieces
/// (aborted, or dropped where they wait) do not keep its admission: with room for one request
/// in flight, a leak would refuse every request after it.
#[test]
fn a_request_past_its_deadline_gets_504_and_keeps_no_admission() {
    let model = model_dir("xgboost");
    let s = Server::ready(
        &model,
        &[
            "--chunk-mb",
            SMALL,
            "--queue-capacity",
            "1",
            "--max-payload-mb",
            "32",
        ],
    );
    let body = xgboost_rows(20_000);
    for _ in 0..3 {
        let r = crate::common::reply(
            crate::common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("X-Mlapp-Timeout-Ms", "20")
                .send_bytes(&body),
        );
        assert_eq!(r.status, 504, "{}", r.body);
        served_again(&s, 3, Duration::from_secs(5), "the timed-out request");
    }
}

/// A body read whole is bounded by its limit already: one record may be longer than the
/// 16 MiB a streamed record may have (it is then judged on its values, not refused as long).
#[test]
fn a_body_read_whole_has_no_record_limit_of_its_own() {
    let s = Server::ready(&model_dir("xgboost"), &["--max-payload-mb", "40"]);
    let line = "1,".repeat(17 << 19);
    let r = s.post(Some("text/csv"), Some("text/csv"), line.as_bytes());
    assert_eq!(r.status, 422, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(r.error().0, "wrong_feature_count");
}

/// A file of no records (empty, or blank lines only) gets an empty answer, not a failure.
#[test]
fn a_file_of_no_records_gets_an_empty_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("empty.csv"), b"").unwrap();
    std::fs::write(input.join("blank.csv"), b"\n\r\n\n").unwrap();
    let out = run_bounded(&mut transform_cmd(&input, &output), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 files done (0 rows)"), "{stderr}");
    for name in ["empty.csv.out", "blank.csv.out"] {
        assert_eq!(std::fs::read(output.join(name)).unwrap(), b"", "{name}");
    }
}

/// `mlapp transform` holds a few pieces, not the file: peak RSS stays well under the file's
/// size (the 110 MiB streamed body of `batch.rs` is the same check for Batch Transform).
#[test]
fn a_large_file_is_transformed_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    let block = xgboost_rows(25 * 400);
    let copies = (120 << 20) / block.len() + 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(input.join("big.csv")).unwrap());
    for _ in 0..copies {
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let size = std::fs::metadata(input.join("big.csv")).unwrap().len();
    // Monitoring's fixed cost is measured in bench/monitoring.py; this bound is the input's.
    let mut child = transform_cmd(&input, &output)
        .env("MLAPP_MONITORING", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // VmHWM only grows: its last reading before the exit is the peak, near enough.
    let mut peak_kib = 0u64;
    let until = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("transform of {size} bytes did not end in 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let answer = std::fs::read(output.join("big.csv.out")).unwrap();
    assert_eq!(answer.split(|&b| b == b'\n').count(), copies * 25 * 400);
    let peak = peak_kib as f64 / 1024.0;
    let file = size as f64 / f64::from(1 << 20);
    assert!(
        peak < 100.0,
        "peak RSS {peak:.0} MiB for a {file:.0} MiB file"
    );
}
