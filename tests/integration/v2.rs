//! The Open Inference Protocol (KServe V2) over REST, checked with Triton's own Python client
//! (`tritonclient[http]` from PyPI, in `.tools/apiclients`: `scripts/install-api-clients.sh`)
//! against the golden answers of every example model, on one model and on many.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::batching::metric;
use crate::common::{agent, model_dir, payload, reply, repo, run_bounded, Reply, Server};

/// The Python of the API clients' virtual environment.
pub fn client_python() -> PathBuf {
    let python = repo().join(".tools/apiclients/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-api-clients.sh (make test does)",
        python.display()
    );
    python
}

fn triton_client(s: &Server, models: &[&str]) {
    let out = run_bounded(
        Command::new(client_python())
            .arg(repo().join("tests/clients/triton_v2.py"))
            .arg(&s.base)
            .arg(repo())
            .arg(models.join(",")),
        Duration::from_secs(180),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for m in models {
        assert!(text.contains(&format!("{m}: metadata")), "{text}");
    }
    assert!(text.contains("errors: each answers"), "{text}");
}

#[test]
fn tritonclient_gets_the_golden_answers_from_every_example_model() {
    let models = [
        "xgboost",
        "logreg",
        "mlp",
        "pipeline",
        "pipeline_strict",
        "agereg",
    ];
    // Many models: each addressed by name, loaded on its first request.
    let repository = repo().join("examples/gender/models");
    let s = Server::start(&[
        "--model-repository",
        repository.to_str().unwrap(),
        "--workers",
        "2",
    ]);
    s.wait_ready(Duration::from_secs(30));
    triton_client(&s, &models);
    // One model, named by its folder.
    let s = Server::ready(&model_dir("xgboost"), &["--workers", "2"]);
    triton_client(&s, &["xgboost"]);
}

fn get(s: &Server, path: &str, token: Option<&str>) -> Reply {
    let mut req = agent().get(&format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    reply(req.call())
}

fn infer(s: &Server, path: &str, body: &str, token: Option<&str>) -> Reply {
    let mut req = agent()
        .post(&format!("{}{path}", s.base))
        .set("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    reply(req.send_string(body))
}

/// The example's first `rows` rows as a V2 request for a model with one `[N, 64]` input.
fn request(rows: usize) -> String {
    let csv = String::from_utf8(payload("xgboost", "rows.csv")).unwrap();
    let data: Vec<f64> = csv
        .lines()
        .take(rows)
        .flat_map(|l| l.split(',').map(|c| c.parse::<f64>().unwrap()))
        .collect();
    serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [rows, 64], "data": data}]})
    .to_string()
}

fn protocol_error(r: &Reply) -> String {
    let v = r.json();
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "{v}");
    obj["error"].as_str().expect("a message").to_string()
}

#[test]
fn a_model_is_named_by_its_config_and_has_one_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        model_dir("xgboost").join("model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    std::fs::write(dir.path().join("mlapp.json"), r#"{"name": "gender"}"#).unwrap();
    let s = Server::ready(dir.path(), &["--workers", "1"]);
    let meta = get(&s, "/v2/models/gender", None);
    assert_eq!(meta.status, 200, "{}", meta.body);
    let meta = meta.json();
    assert_eq!(meta["name"], "gender");
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 64]));
    assert_eq!(meta["outputs"][0]["datatype"], "INT64");
    assert_eq!(meta["outputs"][1]["shape"], serde_json::json!([-1, 2]));

    let r = infer(&s, "/v2/models/gender/versions/1/infer", &request(3), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let gold = crate::common::golden("xgboost");
    let v = r.json();
    assert_eq!(v["model_version"], "1");
    assert_eq!(
        v["outputs"][0]["data"].as_array().unwrap()[..],
        gold["labels"].as_array().unwrap()[..3]
    );

    let r = infer(&s, "/v2/models/xgboost/infer", &request(1), None);
    assert_eq!(r.status, 404);
    assert!(
        protocol_error(&r).contains("serves \"gender\""),
        "{}",
        r.body
    );
    let r = get(&s, "/v2/models/gender/versions/2", None);
    assert_eq!(r.status, 404);
    assert!(protocol_error(&r).contains("version \"2\""), "{}", r.body);
    let r = reply(
        agent()
            .delete(&format!("{}/v2/models/gender", s.base))
            .call(),
    );
    assert_eq!(r.status, 405);
    protocol_error(&r);

    // Counted under the V2 route, and the refusal as a refusal.
    let m = s.get("/metrics").body;
    let series = "mlapp_http_requests_total{route=\"/v2/models/{name}/infer\",status=";
    assert_eq!(
        metric(&m, &format!("{series}\"200\",model=\"gender\"}}")),
        1.0
    );
    assert_eq!(metric(&m, &format!("{series}\"404\"}}")), 1.0, "{m}");
}

#[test]
fn health_routes_need_no_token_and_say_when_the_model_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "v2-token\n").unwrap();
    let s = Server::ready(
        &model_dir("xgboost"),
        &["--auth-token-file", tokens.to_str().unwrap()],
    );
    assert_eq!(get(&s, "/v2/health/live", None).status, 200);
    assert_eq!(get(&s, "/v2/health/ready", None).status, 200);
    let refused = get(&s, "/v2", None);
    assert_eq!(refused.status, 401);
    assert!(
        protocol_error(&refused).contains("Bearer"),
        "{}",
        refused.body
    );
    assert_eq!(get(&s, "/v2/models/xgboost/ready", None).status, 401);
    assert_eq!(
        get(&s, "/v2/models/xgboost/ready", Some("v2-token")).status,
        200
    );
    let path = "/v2/models/xgboost/infer";
    assert_eq!(infer(&s, path, &request(2), None).status, 401);
    assert_eq!(infer(&s, path, &request(2), Some("v2-token")).status, 200);

    // A model that cannot load: live, but not ready, with the reason.
    let missing = dir.path().join("no-model-here");
    let s = Server::start(&["--model-dir", missing.to_str().unwrap()]);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while get(&s, "/v2/health/live", None).status != 200 {
        assert!(std::time::Instant::now() < until, "never live");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = get(&s, "/v2/health/ready", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(protocol_error(&r).contains("no-model-here"), "{}", r.body);
    let r = get(&s, "/v2/models/model/ready", None);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = infer(&s, "/v2/models/model/infer", &request(1), None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(protocol_error(&r).contains("not ready"), "{}", r.body);
}

/// The pipeline example's rows as a V2 request: every input as binary data, or as JSON.
fn pipeline_request(meta: &serde_json::Value, binary: bool) -> (Vec<u8>, Option<usize>) {
    let columns: serde_json::Value =
        serde_json::from_slice(&payload("pipeline", "inputs.json")).unwrap();
    let mut inputs = Vec::new();
    let mut data = Vec::new();
    let mut specs: Vec<&serde_json::Value> = meta["inputs"].as_array().unwrap().iter().collect();
    if binary {
        // Any order: inputs are matched by name, and the capture's reader does the same.
        specs.reverse();
    }
    for spec in specs {
        let name = spec["name"].as_str().unwrap();
        let values = columns["inputs"][name].as_array().unwrap();
        let mut input = serde_json::json!({"name": name, "datatype": spec["datatype"],
            "shape": [values.len(), 1]});
        if !binary {
            input["data"] = serde_json::Value::from(values.clone());
        } else {
            let before = data.len();
            for v in values {
                match spec["datatype"].as_str().unwrap() {
                    "BYTES" => {
                        let s = v.as_str().unwrap();
                        data.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        data.extend_from_slice(s.as_bytes());
                    }
                    "INT64" => data.extend_from_slice(&v.as_i64().unwrap().to_le_bytes()),
                    _ => data.extend_from_slice(&(v.as_f64().unwrap() as f32).to_le_bytes()),
                }
            }
            input["parameters"] = serde_json::json!({"binary_data_size": data.len() - before});
        }
        inputs.push(input);
    }
    // The outputs named, as tritonclient names them.
    let outputs = serde_json::json!([{"name": "label"}, {"name": "probabilities"}]);
    let mut body = serde_json::json!({"inputs": inputs, "outputs": outputs,
        "parameters": {"binary_data_output": binary}})
    .to_string()
    .into_bytes();
    let header = body.len();
    body.extend_from_slice(&data);
    (body, binary.then_some(header))
}

#[test]
fn v2_requests_are_captured_and_read_back_by_mlapp_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let s = Server::ready(
        &model_dir("pipeline"),
        &[
            "--capture-uri",
            capture.to_str().unwrap(),
            "--capture-percent",
            "100",
            "--capture-roll-seconds",
            "1",
        ],
    );
    let meta = get(&s, "/v2/models/pipeline", None).json();
    for binary in [false, true] {
        let (body, header) = pipeline_request(&meta, binary);
        let mut req = agent().post(&format!("{}/v2/models/pipeline/infer", s.base));
        if let Some(n) = header {
            req = req.set("Inference-Header-Content-Length", &n.to_string());
        }
        let r = reply(req.send_bytes(&body));
        assert_eq!(r.status, 200, "binary {binary}: {}", r.body);
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let out = dir.path().join("offline");
    let stats = loop {
        let run = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_mlapp")).args([
                "monitor",
                "--baseline",
                model_dir("pipeline").join("baseline").to_str().unwrap(),
                "--input",
                capture.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ]),
            Duration::from_secs(60),
        );
        let stats: Option<serde_json::Value> = std::fs::read(out.join("statistics.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let done = run.status.success()
            && stats
                .as_ref()
                .is_some_and(|v| v["dataset"]["item_count"] == 50);
        if done || std::time::Instant::now() > until {
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            break stats.unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // 25 rows sent twice: JSON, then binary data.
    assert_eq!(stats["dataset"]["item_count"], 50, "{stats}");
    let columns: serde_json::Value =
        serde_json::from_slice(&payload("pipeline", "inputs.json")).unwrap();
    let apps: Vec<f64> = columns["inputs"]["n_apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mean = apps.iter().sum::<f64>() / apps.len() as f64;
    let feature = stats["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "n_apps")
        .unwrap();
    let got = &feature["numerical_statistics"];
    assert_eq!(got["common"]["num_present"], 50, "{feature}");
    assert!(
        (got["mean"].as_f64().unwrap() - mean).abs() < 1e-4,
        "{feature} vs {mean}"
    );
    let city = stats["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "city")
        .unwrap();
    assert_eq!(
        city["string_statistics"]["common"]["num_present"], 50,
        "{city}"
    );
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("female"), "the answers' labels are tallied");
}
