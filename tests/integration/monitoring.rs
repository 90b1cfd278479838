//! Monitoring: `mlapp baseline` against statistics computed by pandas/numpy, `mlapp monitor`'s
//! checks on shifted data, live monitoring and prediction capture in a running server (local
//! folder and S3 on moto).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, moto::Moto, run_bounded, Server};

fn data(name: &str) -> PathBuf {
    common::repo().join("examples/gender/monitoring").join(name)
}

fn golden() -> Value {
    let text = std::fs::read_to_string(data("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden json")
}

fn mlapp(args: &[&str]) -> std::process::Output {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp")).args(args),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "mlapp {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

/// (feature, check) of every violation in a violations file or list.
fn checks(v: &Value) -> BTreeSet<(String, String)> {
    let list = v.get("violations").unwrap_or(v);
    list.as_array()
        .expect("violations list")
        .iter()
        .map(|v| {
            (
                v["feature_name"].as_str().unwrap().to_string(),
                v["constraint_check_type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(f, c)| (f.to_string(), c.to_string()))
        .collect()
}

/// What shifting the example data does (examples/gender/monitoring.py): n_apps × 1.6,
/// a new brand in 25 % of rows, screen_inches emptied in 30 % of rows.
fn drifted_violations() -> BTreeSet<(String, String)> {
    set(&[
        ("n_apps", "baseline_drift_check"),
        ("brand", "categorical_values_check"),
        ("brand", "baseline_drift_check"),
        ("screen_inches", "completeness_check"),
    ])
}

fn baseline_of_train(dir: &Path) -> PathBuf {
    let out = dir.join("baseline");
    let model = common::model_dir("pipeline");
    mlapp(&[
        "baseline",
        "--model-dir",
        model.to_str().unwrap(),
        "--input",
        data("train.csv").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    out
}

/// Rank of `x` in sorted `xs` (values <= x), for quantiles compared within the sketch's
/// stated rank error.
fn rank(xs: &[f64], x: f64) -> (usize, usize) {
    (
        xs.partition_point(|v| *v < x),
        xs.partition_point(|v| *v <= x),
    )
}

#[test]
fn baseline_matches_independently_computed_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let out = baseline_of_train(dir.path());
    let stats = read_json(&out.join("statistics.json"));
    let constraints = read_json(&out.join("constraints.json"));
    let gold = &golden()["train"];
    assert_eq!(stats["dataset"]["item_count"], gold["item_count"]);
    let features = stats["features"].as_array().unwrap();
    let gold_features = gold["features"].as_array().unwrap();
    assert_eq!(features.len(), gold_features.len());
    // The training CSV's values, to place the sketch's quantiles by rank.
    let mut reader = csv::Reader::from_path(data("train.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{what}: {a} vs {b}"
        )
    };
    for (f, g) in features.iter().zip(gold_features) {
        let name = g["name"].as_str().unwrap();
        assert_eq!(f["name"], name);
        assert_eq!(f["inferred_type"], g["inferred_type"], "{name}");
        if let Some(n) = f.get("numerical_statistics") {
            assert_eq!(n["common"]["num_present"], g["num_present"], "{name}");
            assert_eq!(n["common"]["num_missing"], g["num_missing"], "{name}");
            for k in ["mean", "sum", "std_dev", "min", "max"] {
                close(
                    n[k].as_f64().unwrap(),
                    g[k].as_f64().unwrap(),
                    &format!("{name} {k}"),
                );
            }
            let buckets: Vec<f64> = n["distribution"]["kll"]["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_f64().unwrap())
                .collect();
            let gold_buckets: Vec<f64> = g["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_f64().unwrap())
                .collect();
            assert_eq!(buckets, gold_buckets, "{name} buckets");
            // Quantiles from the sketch in the file, within its stated rank error (0.5 % of
            // n; exact here, with fewer rows than the sketch holds).
            let sketch = &n["distribution"]["kll"]["sketch"];
            assert_eq!(sketch["parameters"]["k"], 2048.0);
            let levels: Vec<Vec<f64>> = serde_json::from_value(sketch["data"].clone()).unwrap();
            let kll = mlapp::monitor::sketch::Kll::from_levels(levels, 2048, 0.64, None, None);
            let col = header.iter().position(|h| h == name).unwrap();
            let mut xs: Vec<f64> = rows
                .iter()
                .filter_map(|r| r[col].parse::<f64>().ok())
                .collect();
            xs.sort_by(f64::total_cmp);
            let tolerance = 0.005 * xs.len() as f64;
            for (q, gq) in g["quantiles"].as_object().unwrap() {
                let q: f64 = q.parse().unwrap();
                let ours = kll.quantile(q).unwrap();
                let (lo, hi) = rank(&xs, ours);
                let want = q * xs.len() as f64;
                assert!(
                    want >= lo as f64 - tolerance && want <= hi as f64 + tolerance,
                    "{name} q{q}: {ours} (numpy {gq}) has rank {lo}..{hi}, want {want}"
                );
            }
        } else {
            let s = &f["string_statistics"];
            assert_eq!(s["common"]["num_present"], g["num_present"], "{name}");
            assert_eq!(
                s["distinct_count"].as_f64(),
                g["distinct_count"].as_f64(),
                "{name}"
            );
            let ours: std::collections::BTreeMap<String, u64> = s["distribution"]["categorical"]
                ["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["value"].as_str().unwrap().to_string(),
                        b["count"].as_u64().unwrap(),
                    )
                })
                .collect();
            let theirs: std::collections::BTreeMap<String, u64> = g["top"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect();
            assert_eq!(ours, theirs, "{name} categories");
        }
    }
    // Domains for the low-cardinality strings (Deequ's rule), none for the numbers, and
    // completeness as observed.
    let cf = constraints["features"].as_array().unwrap();
    let domain = |n: &str| {
        cf.iter().find(|f| f["name"] == n).unwrap()["string_constraints"]["domains"]
            .as_array()
            .map(|d| d.len())
    };
    assert_eq!(domain("os"), Some(3));
    assert_eq!(domain("brand"), Some(8));
    assert_eq!(domain("n_apps"), None);
    let dam = cf
        .iter()
        .find(|f| f["name"] == "device_age_months")
        .unwrap();
    assert_eq!(dam["completeness"].as_f64(), Some(0.99));
    assert_eq!(
        constraints["monitoring_config"]["distribution_constraints"]["comparison_method"],
        "Robust"
    );
}

#[test]
fn drift_checks_find_exactly_what_was_changed() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = baseline_of_train(dir.path());
    let monitor = |input: &Path, out: &str| {
        let out = dir.path().join(out);
        mlapp(&[
            "monitor",
            "--baseline",
            baseline.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(out.join("report.html").is_file());
        assert!(out.join("statistics.json").is_file());
        checks(&read_json(&out.join("constraint_violations.json")))
    };
    assert_eq!(monitor(&data("current.csv"), "same"), BTreeSet::new());
    assert_eq!(
        monitor(&data("drifted.csv"), "drifted"),
        drifted_violations()
    );

    // One column less, one column more: the column checks and nothing else.
    let mut reader = csv::Reader::from_path(data("current.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let gone = header.iter().position(|h| h == "language").unwrap();
    let mut missing = csv::Writer::from_path(dir.path().join("missing.csv")).unwrap();
    let mut extra = csv::Writer::from_path(dir.path().join("extra.csv")).unwrap();
    let without = |r: &csv::StringRecord| -> csv::StringRecord {
        r.iter()
            .enumerate()
            .filter(|(j, _)| *j != gone)
            .map(|(_, c)| c)
            .collect()
    };
    missing.write_record(&without(&header)).unwrap();
    let mut h = header.clone();
    h.push_field("campaign");
    extra.write_record(&h).unwrap();
    for r in reader.records() {
        let r = r.unwrap();
        missing.write_record(&without(&r)).unwrap();
        let mut e = r.clone();
        e.push_field("x");
        extra.write_record(&e).unwrap();
    }
    missing.flush().unwrap();
    extra.flush().unwrap();
    assert_eq!(
        monitor(&dir.path().join("missing.csv"), "missing"),
        set(&[("language", "missing_column_check")])
    );
    assert_eq!(
        monitor(&dir.path().join("extra.csv"), "extra"),
        set(&[("campaign", "extra_column_check")])
    );
}

fn data_rows(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    text.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

pub(crate) fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn capture_lines(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().is_file() && name.ends_with(".jsonl") && !name.starts_with('.') {
            let text = std::fs::read_to_string(e.path()).unwrap();
            out.extend(
                text.lines()
                    .map(|l| (e.path().to_path_buf(), l.to_string())),
            );
        }
    }
    out
}

/// One captured line is SageMaker's layout: keys in order, both directions, an eventId, an
/// inference time at second precision.
fn check_record(line: &str, input: &str, output_type: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let (a, b, c) = (
        line.find("\"captureData\"").unwrap(),
        line.find("\"eventMetadata\"").unwrap(),
        line.find("\"eventVersion\"").unwrap(),
    );
    assert!(a < b && b < c, "key order: {line}");
    assert_eq!(v["eventVersion"], "0");
    let i = &v["captureData"]["endpointInput"];
    assert_eq!(i["observedContentType"], "text/csv");
    assert_eq!(i["mode"], "INPUT");
    assert_eq!(i["encoding"], "CSV");
    assert_eq!(i["data"].as_str().unwrap(), input);
    let o = &v["captureData"]["endpointOutput"];
    assert_eq!(o["observedContentType"], output_type);
    assert_eq!(o["mode"], "OUTPUT");
    let t = v["eventMetadata"]["inferenceTime"].as_str().unwrap();
    assert_eq!(t.len(), 20, "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    assert_eq!(v["eventMetadata"]["eventId"].as_str().unwrap().len(), 36);
    v
}

fn post_with(s: &Server, body: &str, inference_id: Option<&str>) -> u16 {
    let mut req = common::agent()
        .post(&format!("{}/invocations", s.base))
        .set("Content-Type", "text/csv")
        .set("Accept", "text/csv");
    if let Some(id) = inference_id {
        req = req.set("X-Amzn-SageMaker-Inference-Id", id);
    }
    common::reply(req.send_string(body)).status
}

fn metric(s: &Server, line_start: &str) -> Option<f64> {
    let text = s.get("/metrics").body;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn live_monitoring_and_capture_in_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let s = Server::ready(
        &common::model_dir("pipeline"),
        &[
            "--capture-uri",
            capture.to_str().unwrap(),
            "--capture-percent",
            "100",
            "--capture-roll-seconds",
            "1",
            "--monitor-window-rows",
            "1000",
        ],
    );
    // The same distribution as the baseline: one window, no violation.
    let current = data_rows("current.csv");
    let mut sent = Vec::new();
    for (i, chunk) in current.chunks(10).enumerate() {
        let body = chunk.concat();
        let id = (i % 2 == 0).then(|| format!("id-{i}"));
        assert_eq!(post_with(&s, &body, id.as_deref()), 200);
        sent.push((body, id));
    }
    let view = wait_for("the first window to close", Duration::from_secs(20), || {
        let v = s.get("/monitoring").json();
        (v["windows_closed"].as_u64() >= Some(1)).then_some(v)
    });
    assert_eq!(view["last"]["rows"], 1000);
    assert_eq!(
        checks(&view["last"]["violations"]),
        BTreeSet::new(),
        "{view}"
    );
    // The window closes when its rows are decoded; the last request's answers may be
    // tallied just after, in the next window.
    let labels = |w: &Value| -> u64 {
        w["predictions"]["labels"]
            .as_object()
            .map_or(0, |l| l.values().filter_map(Value::as_u64).sum())
    };
    let tallied = wait_for("every answer tallied", Duration::from_secs(10), || {
        let v = s.get("/monitoring").json();
        let n = labels(&v["last"]) + labels(&v["current"]);
        (n == 1000).then_some(n)
    });
    assert_eq!(tallied, 1000);
    assert!(labels(&view["last"]) >= 990, "{view}");

    // Shifted data: an empty float cell is a missing value (NaN), so every row is scored.
    for chunk in data_rows("drifted.csv").chunks(10) {
        let body = chunk.concat();
        assert_eq!(post_with(&s, &body, None), 200);
        sent.push((body, None));
    }
    let view = wait_for(
        "the second window to close",
        Duration::from_secs(20),
        || {
            let v = s.get("/monitoring").json();
            (v["windows_closed"].as_u64() >= Some(2)).then_some(v)
        },
    );
    assert_eq!(view["last"]["rows"], 1000);
    assert_eq!(
        checks(&view["last"]["violations"]),
        drifted_violations(),
        "{view}"
    );
    let metrics = s.get("/metrics").body;
    for (feature, check) in drifted_violations() {
        let line = format!(
            "mlapp_feature_violations_total{{model=\"pipeline\",feature=\"{feature}\",check=\"{check}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
    let distance = metric(
        &s,
        "mlapp_feature_drift_distance{model=\"pipeline\",feature=\"n_apps\"}",
    );
    assert!(distance.unwrap() > 0.5, "{distance:?}");
    assert_eq!(metric(&s, "mlapp_monitoring_windows_total"), Some(2.0));

    // A refused request is a data-quality event of the feature and check it fails.
    let mut bad: Vec<String> = current[0].trim_end().split(',').map(String::from).collect();
    let at = bad.len() - 35; // n_apps, counted from the end: the city may hold a comma
    bad[at] = "lots".into();
    assert_eq!(post_with(&s, &bad.join(","), None), 422);
    assert_eq!(
        metric(&s, "mlapp_data_quality_events_total{model=\"pipeline\",feature=\"n_apps\",check=\"data_type_check\"}"),
        Some(1.0)
    );

    // Every accepted request was captured, once, as it was sent; the refused ones were not.
    let lines = wait_for("capture files", Duration::from_secs(20), || {
        let l = capture_lines(&capture);
        (l.len() >= sent.len()).then_some(l)
    });
    assert_eq!(lines.len(), sent.len());
    let mut ids = HashSet::new();
    let mut with_inference_id = 0;
    let inputs: HashSet<&str> = sent.iter().map(|(b, _)| b.as_str()).collect();
    for (path, line) in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let input = v["captureData"]["endpointInput"]["data"]
            .as_str()
            .unwrap()
            .to_string();
        let v = check_record(line, &input, "text/csv");
        assert!(ids.insert(v["eventMetadata"]["eventId"].as_str().unwrap().to_string()));
        if let Some(id) = v["eventMetadata"]["inferenceId"].as_str() {
            with_inference_id += 1;
            let i: usize = id.strip_prefix("id-").unwrap().parse().unwrap();
            assert_eq!(sent[i].0, input, "inference id {id} names another request");
        }
        // {uri}/{endpoint}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-uuid.jsonl, the hour of the
        // record's inference time.
        let rel: Vec<String> = path
            .strip_prefix(&capture)
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().to_string())
            .collect();
        assert_eq!(rel.len(), 7, "{rel:?}");
        assert_eq!(
            (rel[0].as_str(), rel[1].as_str()),
            ("pipeline", "AllTraffic")
        );
        let t = v["eventMetadata"]["inferenceTime"].as_str().unwrap();
        assert_eq!(
            format!("{}/{}/{}/{}", rel[2], rel[3], rel[4], rel[5]),
            format!("{}/{}/{}/{}", &t[0..4], &t[5..7], &t[8..10], &t[11..13])
        );
        assert_eq!(
            rel[6].len(),
            "00-00-000-".len() + 36 + ".jsonl".len(),
            "{}",
            rel[6]
        );
        assert!(inputs.contains(input.as_str()));
    }
    assert_eq!(with_inference_id, 50);

    // The capture reads back offline: every row, and the answers' labels.
    let out = dir.path().join("offline");
    mlapp(&[
        "monitor",
        "--baseline",
        common::model_dir("pipeline")
            .join("baseline")
            .to_str()
            .unwrap(),
        "--input",
        capture.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let stats = read_json(&out.join("statistics.json"));
    assert_eq!(stats["dataset"]["item_count"], 2000);
}

#[test]
fn a_broken_capture_sink_drops_records_and_never_fails_requests() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let s = Server::ready(
        &common::model_dir("pipeline"),
        &[
            "--capture-uri",
            capture.to_str().unwrap(),
            "--capture-roll-seconds",
            "1",
        ],
    );
    let rows = data_rows("current.csv");
    assert_eq!(post_with(&s, &rows[0], None), 200);
    wait_for("the first capture file", Duration::from_secs(20), || {
        (!capture_lines(&capture).is_empty()).then_some(())
    });
    // The endpoint's folder becomes a file: no capture file can be made any more.
    std::fs::remove_dir_all(capture.join("pipeline")).unwrap();
    std::fs::write(capture.join("pipeline"), b"not a folder").unwrap();
    for row in &rows[1..200] {
        assert_eq!(post_with(&s, row, None), 200);
    }
    let dropped = wait_for("dropped records", Duration::from_secs(20), || {
        metric(&s, "mlapp_capture_records_total{outcome=\"dropped_error\"}").filter(|d| *d >= 199.0)
    });
    assert_eq!(dropped, 199.0);
    assert_eq!(
        metric(&s, "mlapp_capture_records_total{outcome=\"written\"}"),
        Some(1.0)
    );
}

/// The example pipeline served with `args`, reaching `moto` as production reaches S3.
fn pipeline_on_moto(moto: &Moto, args: &[&str]) -> Server {
    let env = moto.env();
    let model = common::model_dir("pipeline");
    let mut all = vec!["--model-dir", model.to_str().unwrap()];
    all.extend_from_slice(args);
    let s = Server::start_with(Some("serve"), &all, &common::moto::pairs(&env));
    s.wait_ready(Duration::from_secs(60));
    s
}

#[test]
fn capture_to_s3_uploads_complete_files_in_sagemakers_key_layout() {
    let moto = Moto::start();
    moto.create_bucket("capture");
    let s = pipeline_on_moto(
        &moto,
        &[
            "--capture-uri",
            "s3://capture/datacapture",
            "--capture-roll-seconds",
            "1",
            "--capture-endpoint",
            "gender-endpoint",
        ],
    );
    let rows = data_rows("current.csv");
    for row in &rows[..50] {
        assert_eq!(post_with(&s, row, None), 200);
    }
    let keys = wait_for("uploaded capture files", Duration::from_secs(30), || {
        let keys = moto.list("capture", "datacapture/");
        let lines: usize = keys
            .iter()
            .map(|k| {
                String::from_utf8(moto.get("capture", k))
                    .unwrap()
                    .lines()
                    .count()
            })
            .sum();
        (lines >= 50).then_some(keys)
    });
    let mut total = 0;
    for key in &keys {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 8, "{key}");
        assert_eq!(
            &parts[..3],
            ["datacapture", "gender-endpoint", "AllTraffic"]
        );
        assert!(
            parts[7].ends_with(".jsonl") && !parts[7].starts_with('.'),
            "{key}"
        );
        let text = String::from_utf8(moto.get("capture", key)).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let input = v["captureData"]["endpointInput"]["data"].as_str().unwrap();
            assert!(rows[..50].iter().any(|r| r == input));
            check_record(line, input, "text/csv");
            total += 1;
        }
    }
    assert_eq!(total, 50);
}

#[test]
fn portal_jobs_and_transform_capture_their_pieces() {
    use crate::portal::{create, example_input, invoke, portal_server, spec, Backend};
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in");
    let rows = example_input(&input);
    let capture = work.path().join("capture");
    let backend = Backend::sqlite();
    let s = portal_server(
        &backend,
        &[
            "--capture-uri",
            capture.to_str().unwrap(),
            "--capture-roll-seconds",
            "1",
        ],
    );
    assert_eq!(
        create(&s, &spec("cap", &input, &work.path().join("out"))).status,
        201
    );
    assert_eq!(invoke(&s, "cap").status, 202);
    crate::portal::wait_for(&s, "cap", &["Completed"], Duration::from_secs(60));
    // Every input row is in one captured record, its answer line beside it.
    let counted = |root: &Path| -> (usize, usize) {
        let lines = capture_lines(root);
        let rows_in: usize = lines
            .iter()
            .map(|(_, l)| {
                let v: Value = serde_json::from_str(l).unwrap();
                check_record(
                    l,
                    v["captureData"]["endpointInput"]["data"].as_str().unwrap(),
                    "text/csv",
                );
                let out = v["captureData"]["endpointOutput"]["data"].as_str().unwrap();
                let ins = v["captureData"]["endpointInput"]["data"].as_str().unwrap();
                assert_eq!(ins.lines().count(), out.lines().count(), "{l}");
                ins.lines().count()
            })
            .sum();
        (lines.len(), rows_in)
    };
    let (records, captured_rows) = wait_for("the job's capture", Duration::from_secs(20), || {
        let c = counted(&capture);
        (c.1 >= rows).then_some(c)
    });
    assert_eq!(captured_rows, rows);
    assert!(
        records >= 3,
        "one record per piece of each of the 3 files: {records}"
    );
    drop(s);

    // mlapp transform: its own capture, flushed before it exits.
    let tcap = work.path().join("tcap");
    crate::portal::transform(
        &input,
        &work.path().join("tout"),
        &[
            "--capture-uri",
            tcap.to_str().unwrap(),
            "--capture-endpoint",
            "batch",
        ],
    );
    assert_eq!(counted(&tcap).1, rows);
    assert!(tcap.join("batch/AllTraffic").is_dir());
}

/// A one-input model of 64 columns: every value reaches its own feature's statistics, as
/// computed here from the rows sent.
#[test]
fn live_statistics_of_a_wide_input_match_the_rows_sent() {
    let text = String::from_utf8(common::payload("xgboost", "rows.csv")).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    let s = Server::ready(
        &common::model_dir("xgboost"),
        &["--monitor-window-rows", &rows.len().to_string()],
    );
    for (i, line) in text.lines().enumerate() {
        // One request of several rows, the rest one by one: both paths of the profile.
        if i == 0 {
            let head: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
            assert_eq!(post_with(&s, &head, None), 200);
        } else if i >= 5 {
            assert_eq!(post_with(&s, line, None), 200);
        }
    }
    let view = wait_for("the window to close", Duration::from_secs(20), || {
        let v = s.get("/monitoring").json();
        (v["windows_closed"].as_u64() >= Some(1)).then_some(v)
    });
    let features = view["last"]["statistics"]["features"].as_array().unwrap();
    assert_eq!(features.len(), 64);
    for (k, f) in features.iter().enumerate() {
        let xs: Vec<f64> = rows.iter().map(|r| r[k]).collect();
        let n = f["numerical_statistics"].clone();
        assert_eq!(n["common"]["num_present"], rows.len(), "input_{k}");
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // The model takes float32: the values it saw are the float32 nearest the text.
        let tol = 1e-6 * mean.abs().max(1.0);
        assert!(
            (n["mean"].as_f64().unwrap() - mean).abs() < tol,
            "input_{k} mean {n}"
        );
        assert!(
            (n["min"].as_f64().unwrap() - min).abs() < tol.max(1e-6 * min.abs()),
            "input_{k}"
        );
        assert!(
            (n["max"].as_f64().unwrap() - max).abs() < tol.max(1e-6 * max.abs()),
            "input_{k}"
        );
    }
}

/// --baseline-uri on S3 takes the place of the model folder's baseline/.
#[test]
fn a_baseline_on_s3_is_used_in_place_of_the_model_folders() {
    let moto = Moto::start();
    moto.create_bucket("baselines");
    let local = common::model_dir("pipeline").join("baseline");
    for name in ["statistics.json", "constraints.json"] {
        moto.put(
            "baselines",
            &format!("gender/{name}"),
            std::fs::read(local.join(name)).unwrap(),
        );
    }
    let s = pipeline_on_moto(
        &moto,
        &[
            "--baseline-uri",
            "s3://baselines/gender/",
            "--monitor-window-rows",
            "1000",
        ],
    );
    let view = s.get("/monitoring").json();
    assert_eq!(view["baseline"], "s3://baselines/gender/");
    for chunk in data_rows("drifted.csv").chunks(10) {
        assert_eq!(post_with(&s, &chunk.concat(), None), 200);
    }
    let view = wait_for("the window to close", Duration::from_secs(20), || {
        let v = s.get("/monitoring").json();
        (v["windows_closed"].as_u64() >= Some(1)).then_some(v)
    });
    assert_eq!(checks(&view["last"]["violations"]), drifted_violations());
}
