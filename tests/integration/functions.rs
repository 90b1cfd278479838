//! Self-made functions around a model: steps in its config are checked at load (a bad one
//! keeps `/ping` at 503 naming it), reload like the model, and show in `mlapp inspect` and
//! the V2 metadata. Their answers are checked against Python in `golden`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{model_dir, Server};

/// A copy of the logreg example with `steps` in its config.
fn logreg_with(steps: Value) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = model_dir("logreg");
    std::fs::copy(src.join("model.onnx"), tmp.path().join("model.onnx")).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(src.join("mlapp.json")).unwrap()).unwrap();
    config["steps"] = steps;
    write_config(tmp.path(), &config);
    tmp
}

/// Written whole and renamed into place, so that a poll never reads half a file.
fn write_config(dir: &Path, config: &Value) {
    let tmp = dir.join(".mlapp.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("mlapp.json")).unwrap();
}

#[test]
fn bad_steps_keep_ping_at_503_naming_the_step() {
    let cases = [
        (
            json!({"before": [{"step": "smooth", "features": ["n_apps"]}]}),
            "unknown variant `smooth`",
        ),
        (
            json!({"before": [{"step": "clip", "features": ["n_apps"], "min": "low"}]}),
            "step 0: invalid type: string \"low\", expected f64",
        ),
        (
            json!({"before": [{"step": "log", "features": ["n_apps", "apps"]}]}),
            "steps.before[0] (log): \"apps\" is not one of the model's features",
        ),
        (
            json!({"before": [
                {"step": "derive", "feature": "total_hours", "expression": "night_share * 2"},
                {"step": "derive", "feature": "night_share", "expression": "total_hours / 2"}
            ]}),
            "steps.before[0] (derive): expression \"night_share * 2\": \"night_share\" is derived by steps.before[1]",
        ),
        (
            json!({"after": [{"step": "class_thresholds", "thresholds": [{"class": "other", "at_least": 0.5}]}]}),
            "steps.after[0] (class_thresholds): the model has no class \"other\" (its classes: female, male)",
        ),
        (
            json!({"after": [{"step": "fields", "fields": {"version": {"major": 1}}}]}),
            "steps.after[0] (fields): the value of \"version\" must be a string, a number or a boolean",
        ),
        (
            json!({"after": [{"step": "top_k", "k": 0}]}),
            "steps.after[0] (top_k): k must be from 1 to 65536, got 0",
        ),
    ];
    for (steps, want) in cases {
        let dir = logreg_with(steps.clone());
        let s = Server::start(&["--model-dir", dir.path().to_str().unwrap()]);
        let reason = s.failure();
        assert!(reason.contains(want), "{steps}: {reason}");
        let r = s.post(Some("text/csv"), None, b"1\n");
        assert_eq!(r.status, 503, "{}", r.body);
    }
}

/// Row 0 of the logreg example as records, less `total_hours`.
fn record_without_total_hours() -> Value {
    let text = std::fs::read_to_string(
        crate::common::repo().join("examples/gender/payloads/logreg/records.jsonl"),
    )
    .unwrap();
    let mut row: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    row.as_object_mut().unwrap().remove("total_hours");
    row
}

#[test]
fn a_changed_step_is_served_after_the_next_poll() {
    let derive = json!({"before": [{"step": "derive", "feature": "total_hours",
        "expression": "hours_games + hours_social + hours_beauty + hours_sports + hours_finance + hours_shopping + hours_news + hours_video"}]});
    let dir = logreg_with(derive.clone());
    let s = Server::ready(dir.path(), &["--model-poll-seconds", "1"]);
    let body = serde_json::to_vec(&record_without_total_hours()).unwrap();
    let label = |s: &Server| {
        let r = s.post(Some("application/json"), None, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["predictions"][0]["label"].clone()
    };
    let before = label(&s);
    assert!(before == "female" || before == "male", "{before}");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("mlapp.json")).unwrap()).unwrap();
    let mut steps = derive;
    steps["after"] = json!([{"step": "rename_labels", "labels": {"female": "F", "male": "M"}}]);
    config["steps"] = steps;
    write_config(dir.path(), &config);
    let want = if before == "female" { "F" } else { "M" };
    let until = Instant::now() + Duration::from_secs(30);
    while label(&s) != want {
        assert!(Instant::now() < until, "the renamed labels never came");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A changed function reloads like the model: clamp.wat's bound 3 made 1.
#[test]
fn a_changed_function_is_served_after_the_next_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let src = model_dir("logreg_wasm");
    std::fs::create_dir(tmp.path().join("functions")).unwrap();
    for f in ["model.onnx", "mlapp.json", "functions/clamp.wat"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let s = Server::ready(tmp.path(), &["--model-poll-seconds", "1"]);
    let body = crate::common::payload("logreg", "rows.csv");
    let answer = |s: &Server| {
        let r = s.post(Some("text/csv"), Some("text/csv"), &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let before = answer(&s);
    let wat = std::fs::read_to_string(src.join("functions/clamp.wat")).unwrap();
    assert!(wat.contains("(f64.const 3)"));
    let changed = tmp.path().join("functions/.clamp.wat.tmp");
    std::fs::write(&changed, wat.replace("(f64.const 3)", "(f64.const 1)")).unwrap();
    std::fs::rename(&changed, tmp.path().join("functions/clamp.wat")).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while answer(&s) == before {
        assert!(
            Instant::now() < until,
            "the changed function was never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn inspect_and_v2_metadata_show_what_a_request_carries() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlapp"))
        .arg("inspect")
        .arg(model_dir("logreg_steps"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "request features (62):",
        "steps before the graph (7):",
        "[0] {",
        "\"step\":\"derive\"",
        "steps after the graph (3):",
        "\"step\":\"rename_labels\"",
        "features per row: 64",
        "warm-up: ",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(!text.contains("FAILED"), "{text}");

    let s = Server::ready(&model_dir("logreg_steps"), &[]);
    let meta = s.get("/v2/models/logreg_steps").json();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 62]), "{meta}");
    assert_eq!(meta["outputs"][0]["datatype"], "BYTES", "{meta}");
}

/// top_k on the Open Inference Protocol is Triton's classification extension
/// (`<value>:<index>:<label>`, most probable first), and the constant fields are the
/// answer's parameters; the metadata says so before any request.
#[test]
fn top_k_and_fields_on_the_open_inference_protocol() {
    let gold = crate::common::golden("segments");
    let s = Server::ready(&model_dir("segments"), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlapp"))
        .arg("inspect")
        .arg(model_dir("segments"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "\"top_k\": [{\"class\": c, \"probability\": p}, ... (3 most probable)]",
        "CSV line: label,c1,p1,...,c3,p3",
        "and in every answer (JSON members, CSV columns at the end; V2 parameters): \
         calibrated=false, model_version=\"segments-2026.12\", top=3",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let meta = s.get("/v2/models/segments").json();
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "probabilities", "datatype": "BYTES", "shape": [-1, 3]}),
        "{meta}"
    );
    let rows: Value =
        serde_json::from_slice(&crate::common::payload("segments", "instances.json")).unwrap();
    let rows = rows["instances"].as_array().unwrap();
    let flat: Vec<Value> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().clone())
        .collect();
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [rows.len(), 64], "data": flat}]});
    let r = crate::common::reply(
        crate::common::agent()
            .post(&format!("{}/v2/models/segments/infer", s.base))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["parameters"], gold["fields"], "{v}");
    let out = &v["outputs"][1];
    assert_eq!(out["shape"], json!([rows.len(), 3]), "{out}");
    let data = out["data"].as_array().unwrap();
    let classes = ["commuter", "gamer", "parent", "shopper", "student"];
    for (r, want) in gold["top"].as_array().unwrap().iter().enumerate() {
        for (i, w) in want.as_array().unwrap().iter().enumerate() {
            let text = data[r * 3 + i].as_str().unwrap();
            let parts: Vec<&str> = text.split(':').collect();
            let (p, index, class): (f64, usize, &str) = (
                parts[0].parse().unwrap(),
                parts[1].parse().unwrap(),
                parts[2],
            );
            assert_eq!(class, w[0].as_str().unwrap(), "row {r}: {text}");
            assert_eq!(classes[index], class, "row {r}: {text}");
            assert!((p - w[1].as_f64().unwrap()).abs() < 1e-6, "row {r}: {text}");
        }
    }
}

/// A folder holding copies of `files` (from the example models and the fixtures) and the
/// config `config`.
fn folder(files: &[(&Path, &str)], config: Value) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (src, name) in files {
        std::fs::copy(src, tmp.path().join(name)).unwrap();
    }
    write_config(tmp.path(), &config);
    tmp
}

fn graph(model: &str) -> std::path::PathBuf {
    model_dir(model).join("model.onnx")
}

#[test]
fn bad_graphs_keep_ping_at_503_naming_the_problem() {
    let fixtures = crate::common::repo().join("tests/fixtures/cycle");
    let (a, b) = (fixtures.join("a.onnx"), fixtures.join("b.onnx"));
    let (logreg, mlp, agereg) = (graph("logreg"), graph("mlp"), graph("agereg"));
    let cases: Vec<(tempfile::TempDir, &str)> = vec![
        (
            folder(
                &[(&a, "a.onnx"), (&b, "b.onnx")],
                json!({"graphs": {"chain": ["a.onnx", "b.onnx"]}}),
            ),
            "graphs: the chain has a cycle: a.onnx, b.onnx each wait for another's output",
        ),
        (
            folder(
                &[(&logreg, "m.onnx")],
                json!({"graphs": {"chain": ["m.onnx", "post.onnx"]}}),
            ),
            "names a graph of graphs \"post.onnx\", but",
        ),
        (
            folder(
                &[(&logreg, "lr.onnx"), (&mlp, "mlp.onnx")],
                json!({"graphs": {"chain": ["lr.onnx", "mlp.onnx"]}}),
            ),
            "lr.onnx and mlp.onnx each end the chain",
        ),
        (
            folder(
                &[(&logreg, "one.onnx"), (&logreg, "two.onnx")],
                json!({"graphs": {"chain": ["one.onnx", "two.onnx"]}}),
            ),
            "one.onnx and two.onnx both make \"label\"",
        ),
        (
            folder(
                &[(&logreg, "lr.onnx"), (&agereg, "age.onnx")],
                json!({"graphs": {"ensemble": {"members": ["lr.onnx", "age.onnx"]}}}),
            ),
            "graphs.ensemble: age.onnx takes (input: ",
        ),
        (
            folder(
                &[(&logreg, "lr.onnx"), (&mlp, "mlp.onnx")],
                json!({"graphs": {"ensemble": {"members": ["lr.onnx", "mlp.onnx"], "weights": [1]}}}),
            ),
            "graphs.ensemble has 1 weights for 2 members",
        ),
        (
            folder(
                &[(&logreg, "lr.onnx")],
                json!({"model_file": "lr.onnx", "graphs": {"chain": ["lr.onnx", "lr.onnx"]}}),
            ),
            "give either model_file or graphs, not both",
        ),
    ];
    for (dir, want) in &cases {
        let s = Server::start(&["--model-dir", dir.path().to_str().unwrap()]);
        let reason = s.failure();
        assert!(reason.contains(want), "{want}: {reason}");
    }
}

/// Three classifiers vote with weights 2, 2 and 3 (no one of them decides alone): the answer
/// follows from each one's own golden labels (Python onnxruntime's), whatever the
/// probabilities.
#[test]
fn an_ensemble_votes_with_its_weights() {
    let config: Value =
        serde_json::from_slice(&std::fs::read(model_dir("logreg").join("mlapp.json")).unwrap())
            .unwrap();
    let dir = folder(
        &[
            (&graph("logreg"), "logreg.onnx"),
            (&graph("mlp"), "mlp.onnx"),
            (&graph("xgboost"), "xgboost.onnx"),
        ],
        json!({
            "feature_names": config["feature_names"],
            "class_labels": ["female", "male"],
            "graphs": {"ensemble": {"members": ["logreg.onnx", "mlp.onnx", "xgboost.onnx"],
                       "weights": [2, 2, 3], "combine": "vote"}},
        }),
    );
    let s = Server::ready(dir.path(), &[]);
    let r = s.post(
        Some("text/csv"),
        Some("application/json"),
        &crate::common::payload("logreg", "rows.csv"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answers = r.json()["predictions"].as_array().unwrap().clone();
    let labels = |m: &str| -> Vec<String> {
        crate::common::golden(m)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| match l {
                Value::String(s) => s.clone(),
                // xgboost's own labels are class numbers.
                n => ["female", "male"][n.as_u64().unwrap() as usize].to_string(),
            })
            .collect()
    };
    let (lr, mlp, xgb) = (labels("logreg"), labels("mlp"), labels("xgboost"));
    assert_eq!(answers.len(), lr.len());
    let mut disagreements = 0;
    for (r, a) in answers.iter().enumerate() {
        let mut male = 0.0;
        for (votes, w) in [(&lr, 2.0), (&mlp, 2.0), (&xgb, 3.0)] {
            if votes[r] == "male" {
                male += w / 7.0;
            }
        }
        let want = if male > 0.5 { "male" } else { "female" };
        assert_eq!(a["label"], want, "row {r}: {a}");
        let p = a["probabilities"]["male"].as_f64().unwrap();
        assert!((p - male).abs() < 1e-6, "row {r}: {p} vs {male}");
        disagreements += usize::from(lr[r] != xgb[r] || mlp[r] != xgb[r]);
    }
    // The rows must include ones where the members disagree, or weights were not tested.
    assert!(disagreements > 0, "every member agreed on every row");
}

fn wasm_fixture(name: &str) -> std::path::PathBuf {
    crate::common::repo().join("tests/fixtures/wasm").join(name)
}

/// logreg with `module` as a `wasm` step over n_apps and screen_inches.
fn logreg_with_function(module: &Path) -> tempfile::TempDir {
    let dir = logreg_with(json!({"before": [{"step": "wasm", "module": "f.wat",
        "features": ["n_apps", "screen_inches"], "fuel_per_row": 10000, "memory_mb": 4}]}));
    std::fs::copy(module, dir.path().join("f.wat")).unwrap();
    dir
}

/// Row 0 of the logreg example as CSV, with n_apps set to `n_apps`.
fn row_with_n_apps(n_apps: &str) -> Vec<u8> {
    let names: Vec<String> = serde_json::from_slice::<Value>(
        &std::fs::read(model_dir("logreg").join("mlapp.json")).unwrap(),
    )
    .unwrap()["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let at = names.iter().position(|n| n == "n_apps").unwrap();
    let text = String::from_utf8(crate::common::payload("logreg", "rows.csv")).unwrap();
    let mut cells: Vec<String> = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    cells[at] = n_apps.to_string();
    format!("{}\n", cells.join(",")).into_bytes()
}

/// Requests that share one run with a request whose function traps are answered: the failed
/// batch is run again a request at a time, so only the trapping one fails. One session and a
/// 20 ms batching window make the sharing certain.
#[test]
fn a_trap_fails_only_its_own_request_in_a_shared_batch() {
    let dir = logreg_with_function(&wasm_fixture("hostile.wat"));
    let s = Server::ready(
        dir.path(),
        &["--workers", "1", "--max-batch-delay-ms", "20"],
    );
    let (good, bad) = (row_with_n_apps("53"), row_with_n_apps("-3"));
    let want = s.post(Some("text/csv"), Some("text/csv"), &good);
    assert_eq!(want.status, 200, "{}", want.body);
    const CLIENTS: usize = 12;
    for round in 0..3 {
        let barrier = std::sync::Barrier::new(CLIENTS);
        let answers: Vec<(usize, crate::common::Reply)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|k| {
                    let (s, barrier, body) = (&s, &barrier, if k % 4 == 0 { &bad } else { &good });
                    scope.spawn(move || {
                        barrier.wait();
                        (k, s.post(Some("text/csv"), Some("text/csv"), body))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (k, r) in answers {
            if k % 4 == 0 {
                assert_eq!(r.status, 500, "round {round}, client {k}: {}", r.body);
                assert!(r.error().1.contains("trapped"), "{}", r.body);
            } else {
                assert_eq!(r.status, 200, "round {round}, client {k}: {}", r.body);
                let label = |b: &str| b.split(',').next().unwrap().to_string();
                assert_eq!(label(&r.body), label(&want.body), "client {k}: {}", r.body);
            }
        }
    }
    let m = s.get("/metrics").body;
    let runs = crate::batching::metric(&m, "mlapp_batch_requests_count");
    let requests = crate::batching::metric(&m, "mlapp_batch_requests_sum");
    assert!(
        runs < requests / 2.0,
        "{requests} requests in {runs} runs: requests were not coalesced"
    );
}

/// A function that loops for ever, grows its memory without end, traps or fails: that
/// request alone fails, within the limit and naming why, while requests beside it are
/// answered, and the server serves on.
#[test]
fn a_misbehaving_function_fails_its_request_only() {
    let dir = logreg_with_function(&wasm_fixture("hostile.wat"));
    let s = std::sync::Arc::new(Server::ready(dir.path(), &[]));
    let good = row_with_n_apps("53");
    let label = |body: &str| -> Value {
        serde_json::from_str::<Value>(body).unwrap()["predictions"][0]["label"].clone()
    };
    let want = s.post(Some("text/csv"), None, &good);
    assert_eq!(want.status, 200, "{}", want.body);
    let want = label(&want.body);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beside: Vec<_> = (0..2)
        .map(|_| {
            let (s, stop, good, want) = (s.clone(), stop.clone(), good.clone(), want.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = s.post(Some("text/csv"), None, &good);
                    // Batched with others, the float32 sums may differ in the last place.
                    assert_eq!(r.status, 200, "{}", r.body);
                    assert_eq!(label(&r.body), want, "{}", r.body);
                    n += 1;
                }
                n
            })
        })
        .collect();
    for (value, why) in [
        ("-1", "ran out of fuel"),
        ("-2", "asked for more than its 4 MiB of memory"),
        (
            "-3",
            "the function trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        ("-4", "returned the error code 7"),
        ("-5", "ran out of fuel"),
    ] {
        for _ in 0..3 {
            let t = Instant::now();
            let r = s.post(Some("text/csv"), None, &row_with_n_apps(value));
            assert_eq!(r.status, 500, "{value}: {}", r.body);
            let (_, message) = r.error();
            assert!(
                message.contains("steps.before[0] (wasm): ") && message.contains(why),
                "{value}: {message}"
            );
            // The limits: fuel (about a second of instructions here), 2 s of wall clock.
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{value} took {:?}",
                t.elapsed()
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in beside {
        assert!(t.join().unwrap() > 0);
    }
    assert_eq!(s.get("/ping").status, 200);
    assert_eq!(label(&s.post(Some("text/csv"), None, &good).body), want);
}

/// A function that takes longer than an HTTP thread may give it (but less than its limit)
/// is answered: the request goes on to a worker.
#[test]
fn a_slow_function_is_answered_from_a_worker() {
    let dir = logreg_with(json!({"before": [{"step": "wasm", "module": "f.wat",
        "features": ["n_apps"], "fuel_per_row": 1_000_000_000u64}]}));
    std::fs::copy(wasm_fixture("hostile.wat"), dir.path().join("f.wat")).unwrap();
    let s = Server::ready(dir.path(), &[]);
    // Cheap requests first, so that the model's measured cost lets requests run inline.
    for _ in 0..50 {
        assert_eq!(
            s.post(Some("text/csv"), None, &row_with_n_apps("53"))
                .status,
            200
        );
    }
    let t = Instant::now();
    let r = s.post(Some("text/csv"), None, &row_with_n_apps("-6"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn a_function_that_cannot_run_here_is_refused_at_load() {
    for (module, want) in [
        (
            wasm_fixture("imports.wat"),
            "steps.before[0] (wasm): module \"f.wat\": it imports wasi_snapshot_preview1::fd_write; a function gets no imports",
        ),
        (
            wasm_fixture("no_transform.wat"),
            "its export \"transform\" must be (i32, i32, i32) -> i32",
        ),
        (model_dir("logreg").join("mlapp.json"), "module \"f.wat\": "),
    ] {
        let dir = logreg_with_function(&module);
        let s = Server::start(&["--model-dir", dir.path().to_str().unwrap()]);
        let reason = s.failure();
        assert!(reason.contains(want), "{want}: {reason}");
    }
}

fn mlapp(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mlapp"))
        .args(args)
        .env("RUST_LOG", "off")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// `mlapp package` of an example model into `out`, with its example rows.
fn package(model: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let dir = model_dir(model);
    let rows = crate::common::repo()
        .join("examples/gender/payloads")
        .join(model)
        .join("records.jsonl");
    let mut args = vec![
        "package",
        dir.to_str().unwrap(),
        "--rows",
        rows.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mlapp(&args)
}

fn unpack(archive: &Path, into: &Path) -> Vec<String> {
    let file = std::fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.unpack(into).unwrap();
    let file = std::fs::File::open(archive).unwrap();
    let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(file))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_package_holds_the_whole_folder_and_its_sample_rows_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.tar.gz");
    let p = package("logreg_wasm", &out, &[]);
    assert!(p.status.success(), "{p:?}");
    let names = unpack(&out, &tmp.path().join("wasm"));
    assert_eq!(
        names,
        [
            "functions/clamp.wat",
            "mlapp.json",
            "model.onnx",
            "parity/expected.jsonl",
            "parity/rows.jsonl"
        ]
    );
    // The expected answers are the golden ones (Python's), as mlapp's JSON Lines give them.
    let gold = crate::common::golden("logreg_wasm");
    let expected = std::fs::read_to_string(tmp.path().join("wasm/parity/expected.jsonl")).unwrap();
    let gold_probs = gold["probabilities"].as_array().unwrap();
    assert_eq!(expected.lines().count(), gold_probs.len());
    for (r, line) in expected.lines().enumerate() {
        let answer: Value = serde_json::from_str(line).unwrap();
        assert_eq!(answer["label"], gold["labels"][r], "row {r}");
        for (k, class) in ["female", "male"].iter().enumerate() {
            let (got, want) = (
                answer["probabilities"][class].as_f64().unwrap(),
                gold_probs[r][k].as_f64().unwrap(),
            );
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1e-6),
                "row {r}: {got} vs {want}"
            );
        }
    }
    let s = Server::ready(&out, &[]);
    assert_eq!(s.get("/ping").json()["status"], "ready");

    let out = tmp.path().join("logreg.tar.gz");
    let p = package("logreg", &out, &[]);
    assert!(p.status.success(), "{p:?}");
    let names = unpack(&out, &tmp.path().join("logreg"));
    assert!(
        names.contains(&"baseline/statistics.json".to_string()),
        "{names:?}"
    );
}

/// Expected answers are the model's values: every class's probability, without `top_k` and
/// `fields`, so Python's own answers can be shipped as they are, and a new version constant
/// in the config is not a broken model.
#[test]
fn parity_compares_values_not_how_top_k_and_fields_show_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("segments.tar.gz");
    let p = package("segments", &out, &[]);
    assert!(p.status.success(), "{p:?}");
    let dir = tmp.path().join("segments");
    unpack(&out, &dir);
    let expected = std::fs::read_to_string(dir.join("parity/expected.jsonl")).unwrap();
    let gold = crate::common::golden("segments");
    for (r, line) in expected.lines().enumerate() {
        let answer: Value = serde_json::from_str(line).unwrap();
        assert_eq!(answer["label"], gold["labels"][r], "row {r}");
        assert_eq!(
            answer["probabilities"].as_object().unwrap().len(),
            5,
            "{answer}"
        );
        assert!(answer.get("top_k").is_none() && answer.get("model_version").is_none());
    }
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("mlapp.json")).unwrap()).unwrap();
    config["steps"]["after"][1]["fields"]["model_version"] = json!("segments-2027.01");
    write_config(&dir, &config);
    let s = Server::ready(&dir, &[]);
    let body = crate::common::payload("segments", "rows.csv");
    let r = s.post(Some("text/csv"), Some("application/json"), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["predictions"][0]["model_version"],
        "segments-2027.01"
    );
}

#[test]
fn a_package_whose_answers_differ_is_refused_naming_the_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.tar.gz");
    assert!(package("logreg_steps", &out, &[]).status.success());
    let dir = tmp.path().join("unpacked");
    unpack(&out, &dir);
    // As packed, it loads: its rows give their answers.
    drop(Server::ready(&dir, &[]));
    let expected_file = dir.join("parity/expected.jsonl");
    let original = std::fs::read_to_string(&expected_file).unwrap();

    // Rows 2 and 5 (1-based) expected otherwise.
    let mut lines: Vec<Value> = original
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[1]["label"] = json!(if lines[1]["label"] == "M" { "F" } else { "M" });
    let p = lines[4]["probabilities"]["M"].as_f64().unwrap();
    lines[4]["probabilities"]["M"] = json!(p + 0.01);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&expected_file, text).unwrap();
    let s = Server::start(&["--model-dir", dir.to_str().unwrap()]);
    let reason = s.failure();
    assert!(
        reason.contains("parity check failed") && reason.contains("rows 2, 5 of"),
        "{reason}"
    );
    assert!(reason.contains("row 2: label: expected"), "{reason}");
    drop(s);

    // Another graph in place of the exported one: the answers differ, the rows are named.
    std::fs::write(&expected_file, &original).unwrap();
    std::fs::copy(graph("mlp"), dir.join("model.onnx")).unwrap();
    let s = Server::start(&["--model-dir", dir.to_str().unwrap()]);
    let reason = s.failure();
    assert!(
        reason.contains("parity check failed")
            && reason.contains(" of ")
            && reason.contains("differ")
            && reason.contains("row "),
        "{reason}"
    );

    // At packaging time, answers given with --expected that the model does not give.
    let wrong = tmp.path().join("wrong.jsonl");
    std::fs::write(
        &wrong,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let p = package(
        "logreg_steps",
        &tmp.path().join("never.tar.gz"),
        &["--expected", wrong.to_str().unwrap()],
    );
    assert!(!p.status.success());
    let err = String::from_utf8_lossy(&p.stderr);
    assert!(err.contains("rows 2, 5 of"), "{err}");
    assert!(!tmp.path().join("never.tar.gz").exists());
}
