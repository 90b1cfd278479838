//! What sits around the portal: `mlapp job run` as Jenkins calls it (each outcome its exit
//! code), late ground truth evaluated against scikit-learn's numbers, the report page, and
//! `mlapp transform`'s pass-through ids and shards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{model_dir, payload, repo, run_bounded, Server};
use crate::portal::{call, create, files, invoke, portal_server, transform, wait_for, Backend};

fn job_run(portal: &str, spec: &Value, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("job.json");
    std::fs::write(&path, spec.to_string()).expect("write spec");
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args(["job", "run", "--portal", portal, "--spec"])
            .arg(&path)
            .args(["--poll", "0.1"])
            .args(extra),
        Duration::from_secs(120),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows_file(path: &Path, copies: usize) {
    let one = payload("logreg", "rows.csv");
    let mut body = Vec::new();
    for _ in 0..copies {
        body.extend_from_slice(&one);
        if !body.ends_with(b"\n") {
            body.push(b'\n');
        }
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body).expect("write");
}

#[test]
fn job_run_exits_with_a_code_per_outcome() {
    let backend = Backend::sqlite();
    let s = portal_server(&backend, &[]);
    let work = tempfile::tempdir().expect("temp dir");
    rows_file(&work.path().join("in/a.csv"), 2);
    let spec = json!({"name": "jenkins-1", "model": model_dir("logreg"),
                      "input": work.path().join("in"), "output": work.path().join("out"),
                      "labels": {"series": "jenkins"}});
    let (code, stdout, stderr) = job_run(&s.base, &spec, &["--wait"]);
    assert_eq!(code, 0, "{stderr}");
    let last: Value = serde_json::from_str(stdout.trim()).expect("the description on stdout");
    assert_eq!(last["status"], "Completed");
    assert!(stderr.contains("items 1/1 done"), "{stderr}");
    // A Jenkins retry of the same step: the job is replayed, not run again.
    let (code, _, stderr) = job_run(&s.base, &spec, &["--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("exists with this definition"), "{stderr}");

    // A gate that fails: exit 7 only when asked.
    let mut gated = spec.clone();
    gated["name"] = json!("jenkins-2");
    gated["output"] = json!(work.path().join("out2"));
    gated["compare_to"] = json!("previous-in-series");
    gated["gates"] = json!([{"metric": "label_share_linf", "min": 0.5}]);
    assert_eq!(job_run(&s.base, &gated, &["--wait"]).0, 0);
    gated["name"] = json!("jenkins-3");
    gated["output"] = json!(work.path().join("out3"));
    assert_eq!(
        job_run(&s.base, &gated, &["--wait", "--require-gates"]).0,
        7
    );

    // A refused definition: 2, naming the field.
    let mut bad = spec.clone();
    bad["name"] = json!("no_underscores");
    let (code, _, stderr) = job_run(&s.base, &bad, &["--wait"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("name"), "{stderr}");

    // A failed job: 1; partly completed: 3.
    let broken = work.path().join("broken");
    rows_file(&broken.join("a.csv"), 1);
    std::fs::write(broken.join("b.csv"), b"abc,1,2\n").unwrap();
    let mut failing = spec.clone();
    failing["name"] = json!("jenkins-fails");
    failing["input"] = json!(broken);
    failing["output"] = json!(work.path().join("out-f"));
    assert_eq!(job_run(&s.base, &failing, &["--wait"]).0, 1);
    failing["name"] = json!("jenkins-partly");
    failing["max_failed_files"] = json!(1);
    assert_eq!(job_run(&s.base, &failing, &["--wait"]).0, 3);

    // Still running at the timeout: 5, and the job goes on.
    let big = work.path().join("big");
    for f in 0..4 {
        rows_file(&big.join(format!("{f}.csv")), 800);
    }
    let mut slow = spec.clone();
    slow["name"] = json!("jenkins-slow");
    slow["input"] = json!(big);
    slow["output"] = json!(work.path().join("out-slow"));
    assert_eq!(job_run(&s.base, &slow, &["--wait", "--timeout", "0"]).0, 5);
    wait_for(&s, "jenkins-slow", &["Completed"], Duration::from_secs(120));

    // Nobody listening: 6.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, _, stderr) = job_run(
        &format!("http://127.0.0.1:{closed}"),
        &spec,
        &["--retries", "1"],
    );
    assert_eq!(code, 6, "{stderr}");
}

#[test]
fn late_ground_truth_gives_scikit_learns_metrics() {
    let backend = Backend::sqlite();
    let s = portal_server(&backend, &[]);
    let work = tempfile::tempdir().expect("temp dir");
    let data = repo().join("examples/gender/ground_truth");
    let golden: Value =
        serde_json::from_slice(&std::fs::read(data.join("metrics.json")).unwrap()).unwrap();
    let spec = json!({"name": "gender-eval", "model": model_dir("logreg"),
                      "input": data.join("devices.csv"), "output": work.path().join("out"),
                      "id_columns": [0]});
    assert_eq!(create(&s, &spec).status, 201);
    // Not finished yet: nothing to evaluate.
    let eval = json!({"name": "gender-eval", "ground_truth": data.join("truth.csv")});
    let r = call(
        &s,
        "POST",
        "/api/providers/prediction/evaluate",
        Some(&eval),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(invoke(&s, "gender-eval").status, 202);
    wait_for(&s, "gender-eval", &["Completed"], Duration::from_secs(60));
    // Each answer line starts with its device's id.
    let out = std::fs::read_to_string(work.path().join("out/devices.csv.out")).unwrap();
    assert!(out
        .lines()
        .enumerate()
        .all(|(i, l)| l.starts_with(&format!("dev-{i:05},"))));

    let ev = evaluated(&s, &eval);
    assert_eq!(ev["status"], "Completed", "{ev}");
    assert_eq!(ev["matched"], 2000);
    let m = &ev["metrics"]["binary_classification_metrics"];
    for key in ["accuracy", "precision", "recall", "f1", "auc"] {
        let (got, want) = (
            m[key]["value"].as_f64().unwrap(),
            golden[key].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() < 1e-9,
            "{key}: mlapp {got}, scikit-learn {want}"
        );
        assert!(
            m[key]["standard_deviation"].as_f64().is_some(),
            "{key}: 2000 rows give a deviation"
        );
    }
    assert_eq!(m["confusion_matrix"], golden["confusion_matrix"]);

    // The report: one page, curves inline, nothing fetched.
    let page = s.get("/api/providers/prediction/report?name=gender-eval");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert_eq!(page.body.matches("<polyline").count(), 2);
    assert!(
        !page.body.contains("<script")
            && !page.body.contains("src=")
            && !page.body.contains("href=")
    );

    // Bad requests name what is wrong.
    let r = call(
        &s,
        "POST",
        "/api/providers/prediction/evaluate",
        Some(&json!({"name": "gender-eval", "ground_truth": work.path().join("none.csv")})),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("ground_truth")),
        "{}",
        r.body
    );
    let r = call(
        &s,
        "POST",
        "/api/providers/prediction/evaluate",
        Some(&json!({"name": "gender-eval"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

/// The evaluation of `eval` (its job finished), once it has ended.
fn evaluated(s: &Server, eval: &Value) -> Value {
    let r = call(s, "POST", "/api/providers/prediction/evaluate", Some(eval));
    assert_eq!(r.status, 202, "{}", r.body);
    let name = eval["name"].as_str().unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = wait_for(s, name, &["Completed"], Duration::from_secs(5));
        if v["evaluation"]["status"] != "InProgress" {
            return v["evaluation"].clone();
        }
        assert!(std::time::Instant::now() < until, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A model whose answers list only the top class and carry a constant field: its lines are
/// read back by their layout, so the evaluation gives scikit-learn's numbers still (the top
/// class's probability is the positive's, or one less the other's).
#[test]
fn ground_truth_is_evaluated_through_top_k_and_fields() {
    // Kept to the end: the server opens new connections to the database in it.
    let backend = Backend::sqlite();
    let s = portal_server(&backend, &[]);
    let work = tempfile::tempdir().expect("temp dir");
    let model = work.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let src = model_dir("logreg");
    std::fs::copy(src.join("model.onnx"), model.join("model.onnx")).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(src.join("mlapp.json")).unwrap()).unwrap();
    config["steps"] = json!({"after": [{"step": "top_k", "k": 1},
        {"step": "fields", "fields": {"model_version": "v,7", "live": true}}]});
    std::fs::write(model.join("mlapp.json"), config.to_string()).unwrap();
    let data = repo().join("examples/gender/ground_truth");
    let golden: Value =
        serde_json::from_slice(&std::fs::read(data.join("metrics.json")).unwrap()).unwrap();
    let spec = json!({"name": "top-eval", "model": model, "input": data.join("devices.csv"),
                      "output": work.path().join("out"), "id_columns": [0]});
    assert_eq!(create(&s, &spec).status, 201);
    let r = invoke(&s, "top-eval");
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(&s, "top-eval", &["Completed"], Duration::from_secs(60));
    let out = std::fs::read_to_string(work.path().join("out/devices.csv.out")).unwrap();
    let first = out.lines().next().unwrap();
    assert!(first.ends_with(",true,\"v,7\""), "{first}");
    assert_eq!(first.split(',').count(), 1 + 1 + 2 + 3, "{first}");
    let ev = evaluated(
        &s,
        &json!({"name": "top-eval", "ground_truth": data.join("truth.csv"),
                "positive_label": "male"}),
    );
    assert_eq!(ev["status"], "Completed", "{ev}");
    assert_eq!(ev["matched"], 2000);
    let m = &ev["metrics"]["binary_classification_metrics"];
    for (key, tolerance) in [
        ("accuracy", 1e-12),
        ("precision", 1e-12),
        ("recall", 1e-12),
        ("f1", 1e-12),
        // One less a float32 probability is not the other class's float32 to the last bit.
        ("auc", 1e-6),
    ] {
        let (got, want) = (
            m[key]["value"].as_f64().unwrap(),
            golden[key].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() < tolerance,
            "{key}: mlapp {got}, scikit-learn {want}"
        );
    }
    assert_eq!(m["confusion_matrix"], golden["confusion_matrix"]);
}

#[test]
fn transform_passes_ids_through_and_splits_into_shards() {
    let work = tempfile::tempdir().expect("temp dir");
    let (inp, plain_in) = (work.path().join("in"), work.path().join("plain"));
    std::fs::create_dir_all(&inp).unwrap();
    std::fs::create_dir_all(&plain_in).unwrap();
    let rows = String::from_utf8(payload("logreg", "rows.csv")).unwrap();
    let mut with_ids = String::new();
    for (i, l) in rows.lines().enumerate() {
        // The id in the middle, quoted with a comma: cut out whole, written back as it was.
        let (a, b) = l.split_once(',').unwrap();
        with_ids.push_str(&format!("{a},\"dev,{i}\",{b}\r\n"));
    }
    std::fs::write(inp.join("x.csv"), &with_ids).unwrap();
    std::fs::write(plain_in.join("x.csv"), &rows).unwrap();
    transform(&inp, &work.path().join("out"), &["--id-columns", "1"]);
    transform(&plain_in, &work.path().join("plain-out"), &[]);
    let got = std::fs::read_to_string(work.path().join("out/x.csv.out")).unwrap();
    let want = std::fs::read_to_string(work.path().join("plain-out/x.csv.out")).unwrap();
    assert_eq!(got.lines().count(), want.lines().count());
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, format!("\"dev,{i}\",{w}"));
    }

    // Shards: disjoint, and together the whole run.
    let many = work.path().join("many");
    for f in 0..7 {
        rows_file(&many.join(format!("{f}.csv")), 1);
    }
    let all = work.path().join("all");
    transform(&many, &all, &[]);
    let mut union = Vec::new();
    for k in 0..3 {
        let out = work.path().join(format!("shard-{k}"));
        transform(
            &many,
            &out,
            &["--shard-index", &k.to_string(), "--shard-count", "3"],
        );
        let got = files(&out);
        assert!(
            !got.is_empty() && got.len() <= 3,
            "shard {k}: {} files",
            got.len()
        );
        union.extend(got);
    }
    union.sort();
    assert_eq!(union, files(&all));
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args(["transform", "--model-dir"])
            .arg(model_dir("logreg"))
            .arg("--input")
            .arg(&many)
            .arg("--output")
            .arg(work.path().join("x"))
            .args(["--shard-index", "3", "--shard-count", "3"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--shard-index must be below --shard-count")
    );
}

#[test]
fn the_portal_off_says_how_to_turn_it_on() {
    let s = Server::ready(&model_dir("logreg"), &[]);
    let r = s.get("/api/providers/prediction/check?name=x");
    assert_eq!((r.status, r.error().0.as_str()), (503, "portal_off"));
    assert!(r.error().1.contains("--state-dir"));
}
