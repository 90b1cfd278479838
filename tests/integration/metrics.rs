//! `GET /metrics`: Prometheus's own parser accepts it, and the series move with the traffic.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::batching::metric;
use crate::common::{self, model_dir, repo, xgboost_rows, Server};

/// Runs `promtool check metrics` on the exposition; panics with its complaints.
fn promtool_check(text: &str) {
    let tool = std::env::var_os("MLAPP_PROMTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/bin/promtool"));
    assert!(
        tool.exists(),
        "{} is missing: run scripts/install-promtool.sh (make test does)",
        tool.display()
    );
    let mut child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn metrics_parse_with_promtool_and_move_with_requests() {
    let port = free_port();
    let s = Server::ready(
        &model_dir("xgboost"),
        &["--metrics-port", &port.to_string()],
    );
    let before = s.get("/metrics");
    assert_eq!(before.status, 200);
    assert!(before.content_type.starts_with("text/plain; version=0.0.4"));
    promtool_check(&before.body);
    assert_eq!(metric(&before.body, "mlapp_rows_scored_total"), 0.0);
    assert_eq!(metric(&before.body, "mlapp_model_ready"), 1.0);
    assert!(before
        .body
        .contains("mlapp_execution_provider_info{provider=\"CPUExecutionProvider\"} 1"));

    for rows in [1, 2, 3] {
        let r = s.post(Some("text/csv"), None, &xgboost_rows(rows));
        assert_eq!(r.status, 200);
    }
    assert_eq!(s.post(Some("text/plain"), None, b"1").status, 415);
    assert_eq!(s.post(Some("text/csv"), None, b"1,2\n").status, 422);
    assert_eq!(s.get("/ping").status, 200);

    let after = s.get("/metrics").body;
    promtool_check(&after);
    let ok = "mlapp_http_requests_total{route=\"/invocations\",status=\"200\",model=\"xgboost\"}";
    assert_eq!(metric(&after, ok), 3.0);
    assert_eq!(
        metric(
            &after,
            "mlapp_http_requests_total{route=\"/invocations\",status=\"415\",model=\"xgboost\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &after,
            "mlapp_http_requests_total{route=\"/ping\",status=\"200\"}"
        ) >= 1.0
    );
    assert_eq!(metric(&after, "mlapp_rows_scored_total"), 6.0);
    assert_eq!(
        metric(
            &after,
            "mlapp_rejected_requests_total{reason=\"unsupported_content_type\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "mlapp_rejected_requests_total{reason=\"wrong_feature_count\"}"
        ),
        1.0
    );
    for stage in ["decode", "queue", "inference", "encode"] {
        let count = metric(
            &after,
            &format!("mlapp_stage_duration_seconds_count{{stage=\"{stage}\"}}"),
        );
        assert_eq!(count, 3.0, "stage {stage}");
    }
    let took = |code: &str| {
        metric(
            &after,
            &format!("mlapp_http_request_duration_seconds_count{{route=\"/invocations\",code=\"{code}\"}}"),
        )
    };
    assert_eq!((took("2xx"), took("4xx"), took("5xx")), (3.0, 2.0, 0.0));
    assert!(metric(&after, "process_resident_memory_bytes") > 1e6);

    // The separate listener serves the same metrics, and nothing else but /ping.
    let side = format!("http://127.0.0.1:{port}");
    let r = common::reply(common::agent().get(&format!("{side}/metrics")).call());
    assert_eq!(r.status, 200);
    assert_eq!(metric(&r.body, "mlapp_rows_scored_total"), 6.0);
    let r = common::reply(
        common::agent()
            .post(&format!("{side}/invocations"))
            .send_bytes(b"1"),
    );
    assert_eq!(r.status, 404);
}
