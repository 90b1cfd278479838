//! Every error status mlapp uses, each with its message asserted.

use std::time::Duration;

use crate::common::{self, model_dir, payload, repo, xgboost_rows, Server};

#[test]
fn malformed_bodies_are_400() {
    let s = Server::ready(&model_dir("logreg"), &[]);
    let r = s.post(Some("application/json"), None, b"{\"instances\": [[1, 2,");
    assert_eq!(r.status, 400);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_json");
    assert!(msg.contains("line 1 column"), "{msg}");

    let mut bad_utf8 = b"\xff\xfe".to_vec();
    bad_utf8.extend(",1".repeat(63).as_bytes());
    let r = s.post(Some("text/csv"), None, &bad_utf8);
    assert_eq!(r.status, 400);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_csv");
    assert!(
        msg.contains("row 1, column 1") && msg.contains("UTF-8"),
        "{msg}"
    );

    let r = s.post(Some("application/jsonlines"), None, b"\n{oops\n");
    assert_eq!(r.status, 400);
    assert!(
        r.error().1.starts_with("line 2: invalid JSON"),
        "{}",
        r.body
    );

    let r = s.post(
        Some("application/x-npy"),
        None,
        b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error().0, "invalid_npy");

    let r = s.post(Some("text/csv"), None, b"");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        ("empty_body".into(), "the request body holds no rows".into())
    );
}

#[test]
fn wrong_rows_for_the_model_are_422_naming_row_column_and_feature() {
    let s = Server::ready(&model_dir("logreg"), &[]);
    let rows = String::from_utf8(payload("logreg", "rows.csv")).unwrap();
    let mut lines: Vec<String> = rows.lines().take(3).map(str::to_string).collect();

    // Row 2 loses its last value.
    let short = lines[1].rsplit_once(',').unwrap().0.to_string();
    let body = format!("{}\n{}\n{}\n", lines[0], short, lines[2]);
    let r = s.post(Some("text/csv"), None, body.as_bytes());
    assert_eq!(r.status, 422);
    let (code, msg) = r.error();
    assert_eq!(code, "wrong_feature_count");
    assert!(msg.starts_with("row 2: expected 64 values"), "{msg}");
    assert!(msg.contains("got 63"), "{msg}");

    // Row 3, column 3 is text.
    let mut cells: Vec<&str> = lines[2].split(',').collect();
    cells[2] = "abc";
    lines[2] = cells.join(",");
    let r = s.post(Some("text/csv"), None, lines.join("\n").as_bytes());
    assert_eq!(r.status, 422);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_value");
    assert_eq!(
        msg,
        "row 3, column 3 (feature \"hours_beauty\"): expected a number (float32), got \"abc\""
    );

    let r = s.post(
        Some("application/json"),
        None,
        br#"{"instances": [{"hours_games": 1}]}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.error(),
        (
            "missing_feature".into(),
            "row 1: missing feature \"hours_social\"".into()
        )
    );
}

#[test]
fn pipeline_type_errors_name_the_feature() {
    let s = Server::ready(&model_dir("pipeline"), &[]);
    let records = payload("pipeline", "records.json");
    let mut v: serde_json::Value = serde_json::from_slice(&records).unwrap();
    v["instances"][1]["price_tier"] = serde_json::json!("premium");
    let r = s.post(Some("application/json"), None, v.to_string().as_bytes());
    assert_eq!(r.status, 422);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_value");
    assert!(
        msg.starts_with("row 2, column 6 (feature \"price_tier\"): expected an integer (int64), got \"premium\""),
        "{msg}"
    );
    v["instances"][1]["price_tier"] = serde_json::json!(2);
    v["instances"][1]["imei"] = serde_json::json!("123");
    let r = s.post(Some("application/json"), None, v.to_string().as_bytes());
    assert_eq!(r.status, 422);
    assert!(
        r.error().1.starts_with("row 2: unknown feature \"imei\""),
        "{}",
        r.body
    );

    let r = s.post(
        Some("application/x-npy"),
        None,
        &payload("logreg", "rows_f32.npy"),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.error().1.contains("expected 41 values"), "{}", r.body);
}

#[test]
fn unsupported_types_are_415_and_406() {
    let s = Server::ready(&model_dir("logreg"), &[]);
    let body = payload("logreg", "rows.csv");
    let r = s.post(Some("application/xml"), None, &body);
    assert_eq!(r.status, 415);
    let (code, msg) = r.error();
    assert_eq!(code, "unsupported_content_type");
    assert!(
        msg.contains("\"application/xml\"") && msg.contains("text/csv, application/json"),
        "{msg}"
    );

    let r = s.post(Some("text/csv"), Some("application/xml, image/png"), &body);
    assert_eq!(r.status, 406);
    let (code, msg) = r.error();
    assert_eq!(code, "not_acceptable");
    assert!(
        msg.contains("application/xml, image/png") && msg.contains("application/jsonlines"),
        "{msg}"
    );

    // No Content-Type at all: the configured default (JSON) applies.
    let r = s.post(None, None, &payload("logreg", "instances.json"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn body_limit_413_over_and_200_at_the_limit() {
    let limit_mb = "0.25";
    let limit = 262_144usize;
    let s = Server::ready(&model_dir("logreg"), &["--max-payload-mb", limit_mb]);
    let rows = payload("logreg", "instances.json");
    // JSON allows trailing whitespace, so padding makes a valid body of any exact size.
    let mut at = rows.clone();
    at.resize(limit, b' ');
    let r = s.post(Some("application/json"), None, &at);
    assert_eq!(r.status, 200, "{}", r.body);

    let mut over = rows.clone();
    over.resize(limit + 1, b' ');
    let r = s.post(Some("application/json"), None, &over);
    assert_eq!(r.status, 413);
    let (code, msg) = r.error();
    assert_eq!(code, "payload_too_large");
    assert_eq!(
        msg,
        format!(
            "the request body is larger than the limit of {limit} bytes ({} bytes sent)",
            limit + 1
        )
    );
}

#[test]
fn default_limit_is_six_mib_and_sagemaker_env_raises_it() {
    let dir = model_dir("logreg");
    let mut body = payload("logreg", "instances.json");
    body.resize(7 * 1024 * 1024, b' ');
    let s = Server::ready(&dir, &[]);
    assert_eq!(s.post(Some("application/json"), None, &body).status, 413);
    let s = Server::start_with(
        Some("serve"),
        &["--model-dir", dir.to_str().unwrap()],
        &[("SAGEMAKER_MAX_PAYLOAD_IN_MB", "8")],
    );
    s.wait_ready(Duration::from_secs(30));
    let r = s.post(Some("application/json"), None, &body);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_model_that_fails_at_run_time_is_500() {
    let s = Server::ready(&repo().join("tests/fixtures/fragile"), &[]);
    let r = s.post(Some("text/csv"), None, b"1,2\n3,4\n");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.post(Some("text/csv"), None, b"1,2\n3,4\n5,6\n");
    assert_eq!(r.status, 500);
    let (code, msg) = r.error();
    assert_eq!(code, "internal_error");
    assert!(
        msg.starts_with("inference failed:") && msg.contains("Reshape"),
        "{msg}"
    );
}

#[test]
fn a_full_queue_is_503_with_retry_after() {
    let s = Server::ready(
        &model_dir("xgboost"),
        &[
            "--workers",
            "1",
            "--queue-capacity",
            "1",
            "--max-payload-mb",
            "32",
        ],
    );
    let body = xgboost_rows(20_000);
    let replies: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.post(Some("text/csv"), Some("text/csv"), &body)))
            .collect();
        // /ping must not wait behind inference, even with the queue full.
        std::thread::sleep(std::time::Duration::from_millis(100));
        for _ in 0..10 {
            let t = std::time::Instant::now();
            assert_eq!(s.get("/ping").status, 200);
            assert!(
                t.elapsed() < std::time::Duration::from_millis(500),
                "ping took {:?}",
                t.elapsed()
            );
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rejected: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(!rejected.is_empty(), "no request was refused");
    for r in &rejected {
        let (code, msg) = r.error();
        assert_eq!(code, "overloaded");
        assert!(msg.contains("queue is full"), "{msg}");
        assert_eq!(r.retry_after.as_deref(), Some("1"));
    }
    for r in replies.iter().filter(|r| r.status != 503) {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body.split('\n').count(), 20_000);
    }
    // Refused requests were refused before their bodies were parsed.
    let decoded = crate::batching::metric(
        &s.get("/metrics").body,
        "mlapp_stage_duration_seconds_count{stage=\"decode\"}",
    );
    assert_eq!(decoded as usize, replies.len() - rejected.len());
    // Once the queue drains, requests are served again.
    assert_eq!(s.post(Some("text/csv"), None, &xgboost_rows(2)).status, 200);
}

#[test]
fn a_request_may_ask_for_a_shorter_deadline_and_is_not_run_after_it() {
    let s = Server::ready(
        &model_dir("xgboost"),
        &["--workers", "1", "--max-payload-mb", "32"],
    );
    // One JSON document (large CSV bodies are scored in chunks, between which other
    // requests get the session): it holds the only session for its whole run.
    let rows = String::from_utf8(xgboost_rows(40_000)).unwrap();
    let rows: Vec<String> = rows.lines().map(|l| format!("[{l}]")).collect();
    let big = format!("[{}]", rows.join(","));
    std::thread::scope(|scope| {
        let first =
            scope.spawn(|| s.post(Some("application/json"), Some("text/csv"), big.as_bytes()));
        // Once the big request is decoded it holds the session for ~100 ms.
        let decoded = "mlapp_stage_duration_seconds_count{stage=\"decode\"}";
        while crate::batching::metric(&s.get("/metrics").body, decoded) < 1.0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Queued behind 40,000 rows on the only session: 20 ms is not enough.
        let r = common::reply(
            common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("X-Mlapp-Timeout-Ms", "20")
                .send_bytes(&xgboost_rows(1)),
        );
        assert_eq!(r.status, 504, "{}", r.body);
        assert_eq!(
            r.error().1,
            "the request did not finish within the 0.020 s timeout"
        );
        assert_eq!(first.join().unwrap().status, 200);
    });
    // The expired request was never scored: only the big one's rows were.
    let m = s.get("/metrics").body;
    assert_eq!(
        crate::batching::metric(&m, "mlapp_rows_scored_total"),
        40_000.0
    );
    let bad = common::reply(
        common::agent()
            .post(&format!("{}/invocations", s.base))
            .set("Content-Type", "text/csv")
            .set("X-Mlapp-Timeout-Ms", "soon")
            .send_bytes(&xgboost_rows(1)),
    );
    assert_eq!(bad.status, 400);
    let (code, msg) = bad.error();
    assert_eq!(code, "invalid_header");
    assert!(
        msg.contains("x-mlapp-timeout-ms") && msg.contains("\"soon\""),
        "{msg}"
    );
}

#[test]
fn a_request_past_its_deadline_is_504() {
    let s = Server::ready(
        &model_dir("xgboost"),
        &[
            "--timeout",
            "0.05",
            "--workers",
            "1",
            "--max-payload-mb",
            "32",
        ],
    );
    let r = s.post(Some("text/csv"), None, &xgboost_rows(40_000));
    assert_eq!(r.status, 504, "{}", &r.body[..r.body.len().min(200)]);
    let (code, msg) = r.error();
    assert_eq!(code, "timeout");
    assert_eq!(msg, "the request did not finish within the 0.050 s timeout");
    // The server is still healthy afterwards.
    assert_eq!(s.post(Some("text/csv"), None, &xgboost_rows(2)).status, 200);
}

#[test]
fn unknown_routes_are_json_404() {
    let s = Server::ready(&model_dir("logreg"), &[]);
    let r = s.get("/predict");
    assert_eq!(r.status, 404);
    assert_eq!(r.error().0, "not_found");
}

#[test]
fn hostile_bodies_get_4xx_and_the_server_stays_up() {
    let s = Server::ready(&model_dir("pipeline"), &[]);
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let wide = "1,".repeat(200_000);
    let mut huge_npy = b"\x93NUMPY\x01\x00".to_vec();
    let header =
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999999), }\n";
    huge_npy.extend((header.len() as u16).to_le_bytes());
    huge_npy.extend(header);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", nested.into_bytes()),
        ("application/json", b"\"just a string\"".to_vec()),
        ("application/json", br#"{"instances": 5}"#.to_vec()),
        (
            "application/json",
            br#"{"inputs": {"country": "US"}}"#.to_vec(),
        ),
        ("application/json", br#"[[1e999, null, true]]"#.to_vec()),
        ("application/jsonlines", b"\x00\x01\x02".to_vec()),
        ("text/csv", wide.into_bytes()),
        ("text/csv", b"\"unterminated,quote\n".to_vec()),
        ("text/csv", b"\n\n\n".to_vec()),
        ("application/x-npy", huge_npy),
        ("application/x-npy", b"\x93NUMPY\x09\x00".to_vec()),
        ("application/x-npy", b"not numpy at all".to_vec()),
    ];
    for (ct, body) in &cases {
        let r = s.post(Some(ct), None, body);
        assert!(
            matches!(r.status, 400 | 413 | 422),
            "{ct} {:?}: {} {}",
            String::from_utf8_lossy(&body[..body.len().min(40)]),
            r.status,
            r.body
        );
        let (code, msg) = r.error();
        assert!(!code.is_empty() && !msg.is_empty());
    }
    assert_eq!(s.get("/ping").status, 200);
    assert_eq!(
        s.post(Some("text/csv"), None, &payload("pipeline", "rows.csv"))
            .status,
        200
    );
}
