//! Large line-oriented bodies (a Batch Transform mini-batch) are scored in chunks: exactly one
//! answer line per input line, in order, equal to Python onnxruntime's outputs, and errors
//! name the row of the whole body, not of the chunk.

use crate::batching::metric;
use crate::common::{assert_csv_row, golden, model_dir, payload, xgboost_rows, Server};

const ROWS: usize = 10_000; // about 7 MB of CSV: several chunks

fn lines_of(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `ROWS` lines cycling through the example's rows, with `eol` line ends.
fn body(lines: &[String], eol: &str, blank_last: bool) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..ROWS {
        out.push_str(&lines[i % lines.len()]);
        out.push_str(eol);
    }
    if blank_last {
        out.push_str(eol);
    }
    out.into_bytes()
}

#[test]
fn one_answer_line_per_row_in_order_for_csv_and_json_lines() {
    let s = Server::ready(&model_dir("xgboost"), &["--max-payload-mb", "32"]);
    let gold = golden("xgboost");
    let csv = lines_of(&payload("xgboost", "rows.csv"));
    let jsonl = lines_of(&payload("xgboost", "rows.jsonl"));
    let cases = [
        ("text/csv", body(&csv, "\n", false)),
        ("text/csv", body(&csv, "\r\n", true)),
        ("application/jsonlines", body(&jsonl, "\n", true)),
    ];
    for (ctype, input) in &cases {
        assert!(input.len() > 4 << 20, "the body must span several chunks");
        let runs_before = metric(&s.get("/metrics").body, "mlapp_inference_runs_total");
        let before = metric(
            &s.get("/metrics").body,
            "mlapp_stage_duration_seconds_count{stage=\"decode\"}",
        );
        for accept in ["text/csv", "application/jsonlines"] {
            let r = s.post(Some(ctype), Some(accept), input);
            assert_eq!(
                r.status,
                200,
                "{ctype} -> {accept}: {}",
                &r.body[..r.body.len().min(300)]
            );
            assert!(
                !r.body.ends_with('\n'),
                "{ctype} -> {accept}: trailing newline"
            );
            let out: Vec<&str> = r.body.split('\n').collect();
            assert_eq!(out.len(), ROWS, "{ctype} -> {accept}");
            for (i, line) in out.iter().enumerate() {
                let line = if accept == "text/csv" {
                    line.to_string()
                } else {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let p = &v["probabilities"];
                    format!("{},{},{}", v["label"], p["0"], p["1"])
                };
                assert_csv_row(&gold, &line, i % csv.len(), &format!("{ctype} -> {accept}"));
            }
        }
        // Chunks are stages of one request each, not requests of their own.
        let after = metric(
            &s.get("/metrics").body,
            "mlapp_stage_duration_seconds_count{stage=\"decode\"}",
        );
        assert_eq!(after - before, 2.0);
        // ...and each chunk is its own run: a 7 MB body is at least three 2 MiB chunks.
        let runs = metric(&s.get("/metrics").body, "mlapp_inference_runs_total") - runs_before;
        assert!(runs >= 6.0, "{runs} runs for two {ctype} requests");
    }
    // The JSON document answer holds the same predictions.
    let r = s.post(Some("text/csv"), Some("application/json"), &cases[0].1);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["predictions"].as_array().unwrap().len(), ROWS);
}

#[test]
fn errors_name_the_row_of_the_whole_body() {
    let s = Server::ready(&model_dir("xgboost"), &["--max-payload-mb", "32"]);
    let text = String::from_utf8(xgboost_rows(ROWS)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // A bad value far past the first chunk: its row number counts from the body's start.
    let mut cells: Vec<String> = lines[8999].split(',').map(str::to_string).collect();
    cells[2] = "abc".into();
    lines[8999] = cells.join(",");
    let r = s.post(Some("text/csv"), None, lines.join("\n").as_bytes());
    assert_eq!(r.status, 422, "{}", r.body);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_value");
    assert!(
        msg.starts_with("row 9000, column 3 (feature \"input_2\")"),
        "{msg}"
    );

    // A syntax error's message names the line of the body too.
    let jsonl = lines_of(&payload("xgboost", "rows.jsonl"));
    let mut body: Vec<String> = (0..ROWS).map(|i| jsonl[i % jsonl.len()].clone()).collect();
    body[7999] = "[1, 2,".into();
    let r = s.post(
        Some("application/jsonlines"),
        None,
        body.join("\n").as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_jsonlines");
    assert!(msg.starts_with("line 8000:"), "{msg}");
}

/// A Batch Transform server on the xgboost example with the given extra environment.
fn batch_server(envs: &[(&str, &str)]) -> Server {
    let dir = model_dir("xgboost");
    let mut all = vec![("SAGEMAKER_BATCH", "true")];
    all.extend_from_slice(envs);
    let s = Server::start_with(
        Some("serve"),
        &["--model-dir", dir.to_str().unwrap(), "--workers", "2"],
        &all,
    );
    s.wait_ready(std::time::Duration::from_secs(60));
    s
}

#[test]
fn a_streamed_record_with_no_line_end_is_refused_at_the_record_limit() {
    let limit = 16 << 20; // stream::MAX_RECORD_BYTES
                          // 1000 good rows, then 20 MiB of one "line" that never ends: refused once it passes the
                          // record limit, whatever the body limit, rather than held whole and rescanned per chunk.
    let mut body = xgboost_rows(1000);
    let good = body.len();
    while body.len() < good + (20 << 20) {
        body.extend_from_slice(b"0.5,");
    }
    for envs in [&[][..], &[("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0")][..]] {
        let s = batch_server(envs);
        for chunked in [false, true] {
            let started = std::time::Instant::now();
            let req = crate::common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("Accept", "text/csv");
            // Transfer-Encoding: chunked when sent from a reader, Content-Length otherwise.
            let r = crate::common::reply(if chunked {
                req.send(std::io::Cursor::new(body.clone()))
            } else {
                req.send_bytes(&body)
            });
            let what = format!("{envs:?}, chunked {chunked}");
            assert_eq!(
                r.status,
                413,
                "{what}: {}",
                &r.body[..r.body.len().min(300)]
            );
            let (code, msg) = r.error();
            assert_eq!(code, "record_too_large", "{what}");
            assert!(
                msg.starts_with(&format!(
                    "the record starting at line 1001 is longer than {limit} bytes"
                )),
                "{what}: {msg}"
            );
            let took = started.elapsed();
            assert!(took.as_secs() < 30, "{what}: refused after {took:?}");
            // The server keeps serving.
            let r = s.post(Some("text/csv"), Some("text/csv"), &xgboost_rows(3));
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            assert_eq!(r.body.split('\n').count(), 3);
        }
    }
}

#[test]
fn cr_only_csv_gets_the_answer_of_the_same_rows_with_lf() {
    let gold = golden("xgboost");
    let csv = lines_of(&payload("xgboost", "rows.csv"));
    // Over the record limit (16 MiB) in all: were a lone CR not a line end, it would be one
    // record, refused.
    let rows = 35_000;
    let with = |eol: &str| {
        let mut out = String::new();
        for i in 0..rows {
            out.push_str(&csv[i % csv.len()]);
            out.push_str(eol);
        }
        out.into_bytes()
    };
    let (lf, cr) = (with("\n"), with("\r"));
    assert!(cr.len() > 16 << 20);
    let s = batch_server(&[]);
    let want = s.post(Some("text/csv"), Some("text/csv"), &lf);
    assert_eq!(want.status, 200, "{}", want.body);
    let got = s.post(Some("text/csv"), Some("text/csv"), &cr);
    assert_eq!(got.status, 200, "{}", &got.body[..got.body.len().min(300)]);
    assert!(got.body == want.body, "CR-only and LF answers differ");
    let out: Vec<&str> = got.body.split('\n').collect();
    assert_eq!(out.len(), rows);
    for (i, line) in out.iter().enumerate().step_by(997) {
        assert_csv_row(&gold, line, i % csv.len(), "CR-only CSV");
    }

    // A small CR-only body gets the same answer streamed (batch) as read whole.
    let online = Server::ready(&model_dir("xgboost"), &[]);
    let small = csv[..5].join("\r") + "\r";
    let jsonl = lines_of(&payload("xgboost", "rows.jsonl"))[..3].join("\r");
    // A CR in JSON Lines is whitespace inside a record, so a CR-only body is one bad record.
    for (ctype, body, status) in [
        ("text/csv", small, 200),
        ("application/jsonlines", jsonl, 400),
    ] {
        let streamed = s.post(Some(ctype), Some("text/csv"), body.as_bytes());
        let whole = online.post(Some(ctype), Some("text/csv"), body.as_bytes());
        assert_eq!(whole.status, status, "{ctype}: {}", whole.body);
        assert_eq!(streamed.status, whole.status, "{ctype}: {}", streamed.body);
        assert_eq!(streamed.body, whole.body, "{ctype}");
    }
}
