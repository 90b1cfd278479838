//! The shadow challenger: compared with the served model on live requests, with figures
//! checked against Python onnxruntime's outputs of both models; both answers captured; and a
//! shadow that is slow, hangs or refuses every input changes nothing for the caller.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{golden, model_dir, payload, repo, send_signal, Server};
use crate::monitoring::{capture_lines, wait_for};

fn shadow_metric(s: &Server, outcome: &str) -> f64 {
    let m = s.get("/metrics").body;
    let series = format!("mlapp_shadow_requests_total{{outcome=\"{outcome}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

fn shadow_ready(s: &Server) {
    wait_for("the shadow model", Duration::from_secs(60), || {
        s.get("/metrics")
            .body
            .contains("mlapp_shadow_requests_total")
            .then_some(())
    });
}

fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn assert_golden(body: &str, model: &str) {
    let gold = golden(model);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 25);
    for (r, line) in lines.iter().enumerate() {
        crate::common::assert_csv_row(&gold, line, r, model);
    }
}

#[test]
fn a_shadow_is_compared_with_the_served_model_and_both_answers_are_captured() {
    let capture = tempfile::tempdir().unwrap();
    let mut s = Server::start(&[
        "--model-dir",
        model_dir("logreg").to_str().unwrap(),
        "--shadow-model-uri",
        model_dir("mlp").to_str().unwrap(),
        "--shadow-percent",
        "100",
        "--capture-uri",
        capture.path().to_str().unwrap(),
        "--capture-percent",
        "100",
        "--capture-endpoint",
        "ep",
    ]);
    s.wait_ready(Duration::from_secs(60));
    shadow_ready(&s);
    let rows = payload("logreg", "rows.csv");
    let requests = 6;
    for _ in 0..requests {
        let r = s.post(Some("text/csv"), Some("text/csv"), &rows);
        assert_eq!(r.status, 200, "{}", r.body);
        // The served model's answer, whatever the shadow says.
        assert_golden(&r.body, "logreg");
    }
    wait_for("the comparisons", Duration::from_secs(30), || {
        (shadow_metric(&s, "compared") == requests as f64).then_some(())
    });

    // What the comparison must say, from Python onnxruntime's outputs of both models.
    let (served, shadow) = (golden("logreg"), golden("mlp"));
    let n = served["labels"].as_array().unwrap().len();
    let (mut agreed, mut flips, mut abs_sum, mut sum) = (0, BTreeMap::new(), 0.0, 0.0);
    for r in 0..n {
        let (a, b) = (label(&served["labels"][r]), label(&shadow["labels"][r]));
        if a == b {
            agreed += 1;
        } else {
            *flips.entry((a.clone(), b)).or_insert(0u64) += requests;
        }
        // Both models' classes are [female, male]: the probability of the served label.
        let k = if a == "female" { 0 } else { 1 };
        let d = shadow["probabilities"][r][k].as_f64().unwrap()
            - served["probabilities"][r][k].as_f64().unwrap();
        abs_sum += d.abs();
        sum += d;
    }
    assert!(
        !flips.is_empty() && agreed > 0,
        "the two models should differ on some rows"
    );
    let view = s.get("/monitoring").json();
    let sh = &view["shadow"];
    assert_eq!(sh["rows"], (n as u64 * requests) as f64 as u64, "{sh}");
    let rate = sh["agreement_rate"].as_f64().unwrap();
    assert!((rate - agreed as f64 / n as f64).abs() < 1e-12, "{sh}");
    let got: BTreeMap<(String, String), u64> = sh["label_flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                (label(&f["from"]), label(&f["to"])),
                f["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, flips);
    let d = &sh["score_delta"];
    assert!(
        (d["mean_abs"].as_f64().unwrap() - abs_sum / n as f64).abs() < 1e-5,
        "{d}"
    );
    assert!(
        (d["mean"].as_f64().unwrap() - sum / n as f64).abs() < 1e-5,
        "{d}"
    );
    let m = s.get("/metrics").body;
    for ((from, to), rows) in &flips {
        let series =
            format!("mlapp_shadow_label_flips_total{{from=\"{from}\",to=\"{to}\"}} {rows}");
        assert!(m.contains(&series), "{series} not in /metrics");
    }

    // Both answers are captured, the shadow's under its own variant, linked by inference id.
    send_signal(s.pid(), libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(30)).is_some());
    let lines = capture_lines(capture.path());
    let mut served_ids: HashMap<String, usize> = HashMap::new();
    let mut shadow_records = Vec::new();
    for (path, line) in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["eventMetadata"]["inferenceId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !id.is_empty(),
            "a shadowed request's records carry an inference id: {line}"
        );
        let rel = path
            .strip_prefix(capture.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel.starts_with("ep/AllTraffic/") {
            *served_ids.entry(id).or_default() += 1;
        } else {
            assert!(rel.starts_with("ep/Shadow/"), "{rel}");
            shadow_records.push((id, v));
        }
    }
    assert_eq!(served_ids.len(), requests as usize);
    assert_eq!(shadow_records.len(), requests as usize);
    for (id, v) in shadow_records {
        assert_eq!(
            served_ids.get(&id),
            Some(&1),
            "shadow record {id} has no served twin"
        );
        let out = v["captureData"]["endpointOutput"]["data"].as_str().unwrap();
        assert_golden(out, "mlp");
    }
}

#[test]
fn a_slow_or_failing_shadow_changes_nothing_for_the_caller() {
    // About a second per row: each 25-row request would take 25 s if the caller waited.
    let slow = repo().join("tests/fixtures/slow_xgboost");
    let s = Server::start(&[
        "--model-dir",
        model_dir("xgboost").to_str().unwrap(),
        "--shadow-model-uri",
        slow.to_str().unwrap(),
        "--shadow-percent",
        "100",
        "--shadow-timeout-ms",
        "300",
        "--warmup-rows",
        "1",
    ]);
    s.wait_ready(Duration::from_secs(60));
    shadow_ready(&s);
    let rows = payload("xgboost", "rows.csv");
    let requests = 8;
    for _ in 0..requests {
        let t = Instant::now();
        let r = s.post(Some("text/csv"), Some("text/csv"), &rows);
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_golden(&r.body, "xgboost");
        assert!(
            took < Duration::from_secs(2),
            "a request took {took:?} beside a slow shadow"
        );
    }
    wait_for("the shadow's timeouts", Duration::from_secs(60), || {
        let gone = shadow_metric(&s, "timed_out") + shadow_metric(&s, "skipped_busy");
        (gone == requests as f64).then_some(())
    });
    assert_eq!(shadow_metric(&s, "compared"), 0.0);
    // Its run of the first request holds a CPU for 25 s: not beside the next server.
    drop(s);

    // A shadow that refuses every input (it takes 4 features, the requests have 64).
    let s = Server::start(&[
        "--model-dir",
        model_dir("logreg").to_str().unwrap(),
        "--shadow-model-uri",
        repo().join("tests/fixtures/slow").to_str().unwrap(),
        "--shadow-percent",
        "100",
        "--warmup-rows",
        "1",
    ]);
    s.wait_ready(Duration::from_secs(60));
    shadow_ready(&s);
    let rows = payload("logreg", "rows.csv");
    for _ in 0..requests {
        let r = s.post(Some("text/csv"), Some("text/csv"), &rows);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_golden(&r.body, "logreg");
    }
    wait_for("the shadow's refusals", Duration::from_secs(30), || {
        (shadow_metric(&s, "refused_input") == requests as f64).then_some(())
    });
    let view = s.get("/monitoring").json();
    assert_eq!(view["shadow"]["rows"], 0, "{view}");
    assert!(view["shadow"]["agreement_rate"].is_null());
}
