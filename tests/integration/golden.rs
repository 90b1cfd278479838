//! Every content type in × every accept out, for each example model: the server's answers
//! equal what Python onnxruntime gave for the same rows (examples/gender/golden), within 1e-5
//! relative.

use serde_json::Value;

use crate::common::{golden, model_dir, payload, Server};

/// (payload file, Content-Type)
const PAYLOADS: &[(&str, &str)] = &[
    ("rows.csv", "text/csv"),
    ("rows_header.csv", "text/csv; header=present"),
    ("instances.json", "application/json"),
    ("records.json", "application/json; charset=utf-8"),
    ("inputs.json", "application/json"),
    ("bare.json", "application/json"),
    ("rows.jsonl", "application/jsonlines"),
    ("records.jsonl", "application/jsonlines"),
    ("rows_f32.npy", "application/x-npy"),
    ("rows_f64.npy", "application/x-npy"),
];

const ACCEPTS: &[&str] = &["application/json", "text/csv", "application/jsonlines"];

/// What a response says, in a form to compare with the golden file.
#[derive(Debug)]
enum Parsed {
    Classifier {
        labels: Vec<String>,
        probabilities: Vec<Vec<f64>>,
    },
    Regressor(Vec<f64>),
}

fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Probabilities keyed by class, in class order. Every example model's classes sort in their
/// column order ("0" < "1", "female" < "male"), so sorted keys give the golden columns.
fn probs_of(obj: &Value) -> Vec<f64> {
    let map = obj.as_object().expect("probabilities object");
    let mut kv: Vec<(&String, f64)> = map
        .iter()
        .map(|(k, v)| (k, v.as_f64().expect("number")))
        .collect();
    kv.sort_by(|a, b| a.0.cmp(b.0));
    kv.into_iter().map(|(_, p)| p).collect()
}

fn parse(kind: &str, accept: &str, body: &str) -> Parsed {
    let entries: Vec<Value> = match accept {
        "application/json" => {
            let v: Value = serde_json::from_str(body).expect("json body");
            v["predictions"]
                .as_array()
                .expect("predictions array")
                .clone()
        }
        "application/jsonlines" => body
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
            .collect(),
        _ => {
            return match kind {
                "classifier" => {
                    let mut labels = vec![];
                    let mut probabilities = vec![];
                    for line in body.split('\n') {
                        let mut cells = line.split(',');
                        labels.push(cells.next().expect("label").to_string());
                        probabilities.push(cells.map(|c| c.parse().expect("float")).collect());
                    }
                    Parsed::Classifier {
                        labels,
                        probabilities,
                    }
                }
                _ => Parsed::Regressor(
                    body.split('\n')
                        .map(|c| c.parse().expect("float"))
                        .collect(),
                ),
            }
        }
    };
    match kind {
        "classifier" => Parsed::Classifier {
            labels: entries.iter().map(|e| label_text(&e["label"])).collect(),
            probabilities: entries
                .iter()
                .map(|e| probs_of(&e["probabilities"]))
                .collect(),
        },
        _ => Parsed::Regressor(
            entries
                .iter()
                .map(|e| e.as_f64().expect("number"))
                .collect(),
        ),
    }
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1e-6)
}

fn check(model: &str, what: &str, got: Parsed, gold: &Value) {
    match got {
        Parsed::Classifier {
            labels,
            probabilities,
        } => {
            let want_labels: Vec<String> = gold["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(label_text)
                .collect();
            assert_eq!(labels, want_labels, "{model} {what}: labels");
            let want = gold["probabilities"].as_array().unwrap();
            assert_eq!(probabilities.len(), want.len(), "{model} {what}: rows");
            for (r, (g, w)) in probabilities.iter().zip(want).enumerate() {
                let w: Vec<f64> = w
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert_eq!(g.len(), w.len(), "{model} {what}: row {r} classes");
                for (a, b) in g.iter().zip(&w) {
                    assert!(close(*a, *b), "{model} {what}: row {r}: {g:?} vs {w:?}");
                }
            }
        }
        Parsed::Regressor(values) => {
            let want: Vec<f64> = gold["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(values.len(), want.len(), "{model} {what}: rows");
            for (r, (a, b)) in values.iter().zip(&want).enumerate() {
                assert!(close(*a, *b), "{model} {what}: row {r}: {a} vs {b}");
            }
        }
    }
}

fn every_format_matches_python(model: &str) {
    served_model_matches_python(&model_dir(model), model);
}

/// The model in `dir` answers `model`'s payloads as Python onnxruntime answered them.
fn served_model_matches_python(dir: &std::path::Path, model: &str) {
    let server = Server::ready(dir, &[]);
    let gold = golden(model);
    let kind = gold["kind"].as_str().unwrap().to_string();
    let dir = crate::common::repo()
        .join("examples/gender/payloads")
        .join(model);
    let mut checked = 0;
    for (file, ctype) in PAYLOADS {
        if !dir.join(file).exists() {
            continue; // e.g. no .npy for the pipeline: a numeric array cannot carry strings
        }
        let body = payload(model, file);
        for accept in ACCEPTS {
            let r = server.post(Some(ctype), Some(accept), &body);
            let what = format!("{file} as {ctype} -> {accept}");
            assert_eq!(r.status, 200, "{model} {what}: {}", r.body);
            assert_eq!(r.content_type, *accept, "{model} {what}");
            if kind == "top_k" {
                check_top_k(&what, accept, &r.body, &gold);
            } else {
                check(model, &what, parse(&kind, accept, &r.body), &gold);
            }
            checked += 1;
        }
    }
    assert!(checked >= 18, "{model}: only {checked} combinations found");
}

#[test]
fn logreg_single_tensor_classifier() {
    every_format_matches_python("logreg");
}

#[test]
fn xgboost_tree_ensemble_without_config() {
    every_format_matches_python("xgboost");
}

#[test]
fn mlp_with_zipmap_output() {
    every_format_matches_python("mlp");
}

#[test]
fn pipeline_with_string_inputs() {
    every_format_matches_python("pipeline");
}

#[test]
fn pipeline_with_the_default_one_hot_encoder() {
    // OneHotEncoder(handle_unknown="error"): made-up warm-up values fail it (see warmup.rs).
    every_format_matches_python("pipeline_strict");
}

#[test]
fn fixed_batch_model_answers_every_row_like_the_dynamic_one() {
    // logreg re-exported with input [1, 64]: every multi-row body is run a row at a time.
    let dir = crate::common::repo().join("tests/fixtures/logreg_fixed");
    served_model_matches_python(&dir, "logreg");
}

#[test]
fn regressor_answers_with_values() {
    every_format_matches_python("agereg");
}

#[test]
fn default_accept_comes_from_sagemaker_env() {
    let dir = model_dir("logreg");
    let s = Server::start_with(
        Some("serve"),
        &["--model-dir", dir.to_str().unwrap()],
        &[("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")],
    );
    s.wait_ready(std::time::Duration::from_secs(30));
    let body = payload("logreg", "rows.csv");
    for accept in [None, Some("*/*")] {
        let r = s.post(Some("text/csv"), accept, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.content_type, "text/csv");
        check(
            "logreg",
            "default accept",
            parse("classifier", "text/csv", &r.body),
            &golden("logreg"),
        );
    }
}

#[test]
fn threshold_from_config_decides_the_label() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        model_dir("logreg").join("model.onnx"),
        tmp.path().join("model.onnx"),
    )
    .unwrap();
    let mut cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir("logreg").join("mlapp.json")).unwrap(),
    )
    .unwrap();
    cfg["threshold"] = serde_json::json!(0.9);
    std::fs::write(tmp.path().join("mlapp.json"), cfg.to_string()).unwrap();
    let s = Server::ready(tmp.path(), &[]);
    let r = s.post(
        Some("text/csv"),
        Some("application/json"),
        &payload("logreg", "rows.csv"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let gold = golden("logreg");
    let Parsed::Classifier { labels, .. } = parse("classifier", "application/json", &r.body) else {
        unreachable!()
    };
    let want: Vec<&str> = gold["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            if p[1].as_f64().unwrap() >= 0.9 {
                "male"
            } else {
                "female"
            }
        })
        .collect();
    assert_eq!(labels, want);
    // The threshold must change something, or this test proves nothing.
    let model_labels: Vec<String> = gold["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(label_text)
        .collect();
    assert_ne!(labels, model_labels);
}

/// Every declarative step, before and after the graph, against the same steps done in numpy
/// (examples/gender/functions.py): two features derived and not sent, missing values filled.
#[test]
fn logreg_with_every_numeric_and_answer_step() {
    every_format_matches_python("logreg_steps");
}

#[test]
fn pipeline_with_text_steps() {
    every_format_matches_python("pipeline_steps");
}

/// preprocess.onnx -> logreg -> postprocess.onnx, listed out of order and wired by name,
/// against the three graphs run one after the other by Python onnxruntime.
#[test]
fn a_chain_of_three_graphs() {
    every_format_matches_python("chain");
}

/// logreg and the MLP (ZipMap output) averaged with weights 1 and 3.
#[test]
fn a_weighted_ensemble_of_two_classifiers() {
    every_format_matches_python("ensemble");
}

/// A WebAssembly function (examples/gender/models/logreg_wasm/functions/clamp.wat) before
/// logreg, against the same clamp done in numpy.
#[test]
fn logreg_behind_a_webassembly_function() {
    every_format_matches_python("logreg_wasm");
}

/// A five-class model whose answers list their 3 most probable classes, in order, and carry
/// constant fields, against numpy's ordering of Python onnxruntime's probabilities.
#[test]
fn top_k_classes_and_constant_fields() {
    every_format_matches_python("segments");
}

/// One answered row: its label, its (class, probability) pairs, its fields by name.
type TopRow = (String, Vec<(String, f64)>, Vec<(String, Value)>);

/// An answer of a `top_k` and `fields` model against the golden labels, top classes (in
/// order, with their probabilities) and constant fields.
fn check_top_k(what: &str, accept: &str, body: &str, gold: &Value) {
    let labels: Vec<String> = gold["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(label_text)
        .collect();
    let top = gold["top"].as_array().unwrap();
    let fields = gold["fields"].as_object().unwrap();
    let rows: Vec<TopRow> = match accept {
        "text/csv" => body
            .split('\n')
            .map(|line| {
                let cells: Vec<&str> = line.split(',').collect();
                let k = top[0].as_array().unwrap().len();
                assert_eq!(cells.len(), 1 + 2 * k + fields.len(), "{what}: {line}");
                let pairs = (0..k)
                    .map(|i| {
                        let p = cells[2 + 2 * i].parse().expect("a probability");
                        (cells[1 + 2 * i].to_string(), p)
                    })
                    .collect();
                // The fields' values, in name order, as CSV writes them.
                let values = fields
                    .keys()
                    .zip(&cells[1 + 2 * k..])
                    .map(|(n, c)| (n.clone(), Value::String((*c).to_string())))
                    .collect();
                (cells[0].to_string(), pairs, values)
            })
            .collect(),
        _ => {
            let entries: Vec<Value> = match accept {
                "application/json" => serde_json::from_str::<Value>(body).unwrap()["predictions"]
                    .as_array()
                    .unwrap()
                    .clone(),
                _ => body
                    .split('\n')
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
            };
            entries
                .iter()
                .map(|e| {
                    let e = e.as_object().expect("an object entry");
                    assert!(e.get("probabilities").is_none(), "{what}: {e:?}");
                    let pairs = e["top_k"]
                        .as_array()
                        .expect("top_k")
                        .iter()
                        .map(|t| {
                            (
                                t["class"].as_str().unwrap().to_string(),
                                t["probability"].as_f64().unwrap(),
                            )
                        })
                        .collect();
                    let rest = e
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "label" | "top_k"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    (label_text(&e["label"]), pairs, rest)
                })
                .collect()
        }
    };
    assert_eq!(rows.len(), labels.len(), "{what}: rows");
    for (r, (label, pairs, values)) in rows.iter().enumerate() {
        assert_eq!(*label, labels[r], "{what}: row {r} label");
        let want = top[r].as_array().unwrap();
        assert_eq!(pairs.len(), want.len(), "{what}: row {r}");
        for ((class, p), w) in pairs.iter().zip(want) {
            assert_eq!(class, w[0].as_str().unwrap(), "{what}: row {r}: {pairs:?}");
            assert!(
                close(*p, w[1].as_f64().unwrap()),
                "{what}: row {r}: {pairs:?}"
            );
        }
        let want: Vec<(String, Value)> = fields
            .iter()
            .map(|(n, v)| {
                let v = match (accept, v) {
                    ("text/csv", Value::String(s)) => Value::String(s.clone()),
                    ("text/csv", other) => Value::String(other.to_string()),
                    (_, other) => other.clone(),
                };
                (n.clone(), v)
            })
            .collect();
        assert_eq!(*values, want, "{what}: row {r} fields");
    }
}
