//! The V2 codec: requests as JSON and binary tensor data, every refusal's message, answers
//! read back, and properties (any body is a frame or an error; tensors round-trip exactly).

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::codec::props::cases;
use crate::codec::{test_sig, Column, DecodeError};
use crate::model::{Label, OutputPlan, Predictions};

fn decode_json(v: Value) -> Result<InferRequest, DecodeError> {
    decode(
        v.to_string().as_bytes(),
        None,
        &test_sig::tensor3(),
        &["label"],
    )
}

fn message(r: Result<InferRequest, DecodeError>) -> String {
    r.expect_err("refused").to_string()
}

/// A request body with the binary tensor data extension: the JSON, then the pieces.
fn with_binary(header: Value, pieces: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = header.to_string().into_bytes();
    let n = body.len();
    for p in pieces {
        body.extend_from_slice(p);
    }
    (body, n)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn strings(v: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in v {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[test]
fn flat_and_nested_data_are_the_same_rows_and_null_is_missing() {
    let flat = decode_json(json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [2, 3], "data": [1, 2.5, 3, 4, null, 6]}]}))
    .unwrap();
    let nested = decode_json(json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [2, 3], "data": [[1, 2.5, 3], [4, null, 6]]}]}))
    .unwrap();
    assert_eq!(flat.frame.rows, 2);
    let Column::F32(v) = &nested.frame.columns[0] else {
        panic!("not floats")
    };
    assert_eq!(v[..2], [1.0, 2.5]);
    assert!(v[4].is_nan());
    assert_eq!(format!("{:?}", flat.frame), format!("{:?}", nested.frame));
    assert!(flat.answer.outputs.is_none() && !flat.answer.binary_default);
}

#[test]
fn plain_number_lists_take_the_fast_path_and_anything_else_serde() {
    let floats = |data: &str| {
        let body = format!(
            r#"{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": {data}}}]}}"#
        );
        decode(body.as_bytes(), None, &test_sig::tensor3(), &[]).map(|r| r.frame.columns)
    };
    let Column::F32(v) = &floats("[ 1 , null, -2.5e-3 ]").unwrap()[0] else {
        panic!("not floats")
    };
    assert_eq!((v[0], v[2]), (1.0, -0.0025));
    assert!(v[1].is_nan());
    // Read as serde reads them, or refused with its words.
    assert_eq!(floats("[[1, 2, 3]]").unwrap(), floats("[1, 2, 3]").unwrap());
    let m = floats(r#"[1, "2", 3]"#).unwrap_err().to_string();
    assert!(m.contains("its data does not hold FP32 values"), "{m}");
    let m = floats("[1e400, 2, 3]").unwrap_err().to_string();
    assert!(
        m.contains("element 0, 1e+400, is not a finite FP32 value"),
        "{m}"
    );
    // Not JSON at all: refused before any list is read.
    for bad in ["[NaN, 2, 3]", "[+1, 2, 3]"] {
        let m = floats(bad).unwrap_err().to_string();
        assert!(m.starts_with("invalid inference request"), "{bad}: {m}");
    }
}

#[test]
fn binary_pieces_follow_the_json_order_of_the_inputs() {
    let sig = test_sig::mixed();
    // Listed hours, city, tier: not the model's order (city, tier, hours).
    let (body, n) = with_binary(
        json!({"id": "r-1", "parameters": {"binary_data_output": true}, "inputs": [
            {"name": "hours", "datatype": "FP32", "shape": [2, 1],
             "parameters": {"binary_data_size": 8}},
            {"name": "city", "datatype": "BYTES", "shape": [2, 1],
             "parameters": {"binary_data_size": 21}},
            {"name": "tier", "datatype": "INT64", "shape": [2, 1], "data": [[3], [1]]},
        ]}),
        &[&f32s(&[1.5, -2.0]), &strings(&["München", "Lagos"])],
    );
    let r = decode(&body, Some(n), &sig, &[]).unwrap();
    assert_eq!(r.answer.id.as_deref(), Some("r-1"));
    assert!(r.answer.binary_default);
    assert_eq!(
        r.frame.columns,
        vec![
            Column::Str(vec!["München".into(), "Lagos".into()]),
            Column::I64(vec![3, 1]),
            Column::F32(vec![1.5, -2.0]),
        ]
    );
}

#[test]
fn each_refusal_names_what_was_wrong() {
    let one = |name: &str, datatype: &str, shape: Value, data: Value| {
        message(decode_json(json!({"inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": data}]})))
    };
    let m = one("input", "FP64", json!([1, 3]), json!([1, 2, 3]));
    assert!(
        m.contains("input \"input\": datatype \"FP64\", but the model takes FP32"),
        "{m}"
    );
    let m = one("input", "FLOAT", json!([1, 3]), json!([1, 2, 3]));
    assert!(m.contains("the protocol's datatypes are BOOL"), "{m}");
    let m = one("input", "FP32", json!([1, 4]), json!([1, 2, 3, 4]));
    assert!(
        m.contains("shape [1, 4], but the model takes [rows, 3]"),
        "{m}"
    );
    let m = one("input", "FP32", json!([2, 3]), json!([1, 2, 3]));
    assert!(m.contains("holds 6 values, but its data has 3"), "{m}");
    let m = one("input", "FP32", json!([1, 3]), json!([1, "x", 3]));
    assert!(
        m.contains("input \"input\": its data does not hold FP32 values"),
        "{m}"
    );
    let m = one("input", "FP32", json!([-1, 3]), json!([1, 2, 3]));
    assert!(m.contains("shape [-1, 3]"), "{m}");
    let m = one("other", "FP32", json!([1, 3]), json!([1, 2, 3]));
    assert!(
        m.contains("unknown input \"other\"; the model takes: input (FP32 [-1, 3])"),
        "{m}"
    );
    let m = message(decode_json(json!({"inputs": []})));
    assert!(m.contains("missing input \"input\""), "{m}");
    let m = one("input", "FP32", json!([0, 3]), json!([]));
    assert_eq!(m, DecodeError::Empty.to_string());
    let m = one("input", "FP32", json!([u64::MAX / 2, 3]), json!([]));
    assert!(m.contains("too large"), "{m}");
    let m = message(decode_json(
        json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 3]}]}),
    ));
    assert!(m.contains("input \"input\" has no data"), "{m}");
    let m = message(decode_json(
        json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 3], "data": [1, 2, 3]}], "outputs": [{"name": "proba"}]}),
    ));
    assert!(
        m.contains("unknown output \"proba\"; the model answers with: label"),
        "{m}"
    );
    let m = message(decode_json(
        json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 3], "data": [1, 2, 3]}], "outputs": [{"name": "label",
        "parameters": {"classification": 2}}]}),
    ));
    assert!(
        m.contains("classification extension is not supported"),
        "{m}"
    );
    let m = message(decode_json(
        json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 3], "data": [1, 2, 3]}], "parameters": {"binary_data_output": "yes"}}),
    ));
    assert!(
        m.contains("\"binary_data_output\" must be true or false"),
        "{m}"
    );
    let mixed = |inputs: Value| {
        message(decode(
            json!({"inputs": inputs}).to_string().as_bytes(),
            None,
            &test_sig::mixed(),
            &[],
        ))
    };
    let m = mixed(json!([
        {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]},
        {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["b"]}]));
    assert!(m.contains("input \"city\" is given twice"), "{m}");
    let m = mixed(json!([
        {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]},
        {"name": "tier", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]},
        {"name": "hours", "datatype": "FP32", "shape": [1, 1], "data": [1]}]));
    assert!(
        m.contains("input \"tier\" has 2 rows, but the inputs before it have 1"),
        "{m}"
    );
    let m = mixed(json!([
        {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["a"],
         "parameters": {"binary_data_size": 0}}]));
    assert!(
        m.contains("input \"city\" has both data and binary_data_size"),
        "{m}"
    );
    let m = message(decode(b"{\"inputs\": [", None, &test_sig::tensor3(), &[]));
    assert!(m.starts_with("invalid inference request: EOF"), "{m}");
    assert!(matches!(
        decode(b"  ", None, &test_sig::tensor3(), &[]),
        Err(DecodeError::Empty)
    ));
}

#[test]
fn binary_refusals_say_which_bytes_are_wrong() {
    let sig = test_sig::mixed();
    let header = |city: usize, hours: usize| {
        json!({"inputs": [
            {"name": "city", "datatype": "BYTES", "shape": [1, 1],
             "parameters": {"binary_data_size": city}},
            {"name": "tier", "datatype": "INT64", "shape": [1, 1], "data": [1]},
            {"name": "hours", "datatype": "FP32", "shape": [1, 1],
             "parameters": {"binary_data_size": hours}},
        ]})
    };
    let run = |h: Value, pieces: &[&[u8]], len: Option<usize>| {
        let (body, n) = with_binary(h, pieces);
        message(decode(&body, Some(len.unwrap_or(n)), &sig, &[]))
    };
    let lagos = strings(&["Lagos"]);
    let m = run(header(9, 4), &[&lagos, &f32s(&[1.0]), b"xx"], None);
    assert!(m.contains("2 bytes follow the JSON object"), "{m}");
    let m = run(header(9, 4), &[&lagos], None);
    assert!(
        m.contains("input \"hours\": binary_data_size is 4, but only 0 bytes"),
        "{m}"
    );
    let m = run(header(9, 8), &[&lagos, &f32s(&[1.0, 2.0])], None);
    assert!(
        m.contains("1 FP32 values take 4 bytes each, but binary_data_size is 8"),
        "{m}"
    );
    let m = run(header(3, 4), &[&lagos[..3], &f32s(&[1.0])], None);
    assert!(m.contains("BYTES element 0 is cut short"), "{m}");
    let m = run(header(7, 4), &[&lagos[..7], &f32s(&[1.0])], None);
    assert!(
        m.contains("BYTES element 0 says 5 bytes, but only 3 are left"),
        "{m}"
    );
    let bad_utf8 = [2, 0, 0, 0, 0xff, 0xfe];
    let m = run(header(6, 4), &[&bad_utf8, &f32s(&[1.0])], None);
    assert!(m.contains("BYTES element 0 is not UTF-8 text"), "{m}");
    let m = run(header(9, 4), &[&lagos, &f32s(&[1.0])], Some(100_000));
    assert!(
        m.contains("Inference-Header-Content-Length is 100000"),
        "{m}"
    );
    // Binary data without the header: said so.
    let (body, _) = with_binary(header(9, 4), &[&lagos, &f32s(&[1.0])]);
    let m = message(decode(&body, None, &sig, &[]));
    assert!(m.starts_with("13 bytes follow the JSON object: binary data needs the Inference-Header-Content-Length"), "{m}");
    let bool_sig = crate::model::ModelSignature::new(
        vec![crate::model::InputSpec {
            name: "flag".into(),
            elem: crate::model::ElemType::Bool,
            shape: vec![-1],
            width: 1,
        }],
        vec![],
        None,
        &crate::model::ModelConfig::default(),
    )
    .unwrap();
    let (body, n) = with_binary(
        json!({"inputs": [{"name": "flag", "datatype": "BOOL", "shape": [3],
            "parameters": {"binary_data_size": 3}}]}),
        &[&[1, 0, 2]],
    );
    let m = message(decode(&body, Some(n), &bool_sig, &[]));
    assert!(
        m.contains("BOOL element 2 is byte 2; BOOL is 0 or 1"),
        "{m}"
    );
    let r = decode(&body[..body.len() - 1], Some(n), &bool_sig, &[]);
    assert!(message(r).contains("binary_data_size is 3, but only 2 bytes"));
}

fn classifier_sig() -> (crate::model::ModelSignature, OutputPlan) {
    classifier_with_steps("[]")
}

/// The classifier of `classifier_sig` with these `after` steps.
fn classifier_with_steps(after: &str) -> (crate::model::ModelSignature, OutputPlan) {
    use crate::model::{ModelConfig, ModelSignature, OutputSpec, OutputType};
    let tensor = |name: &str, elem: &str, shape: Vec<i64>| OutputSpec {
        name: name.into(),
        ty: OutputType::Tensor {
            elem: elem.into(),
            shape,
        },
    };
    let sig = ModelSignature::new(
        test_sig::tensor3().inputs,
        vec![
            tensor("label", "int64", vec![-1]),
            tensor("probabilities", "float32", vec![-1, 2]),
        ],
        None,
        &ModelConfig::default(),
    )
    .unwrap();
    let config = ModelConfig {
        class_labels: vec!["female".into(), "male".into()],
        steps: serde_json::from_str(&format!(r#"{{"after": {after}}}"#)).unwrap(),
        ..Default::default()
    };
    let plan = OutputPlan::choose(&sig, &config).unwrap();
    (sig, plan)
}

/// `predictions()` as `plan`'s `top_k` and `fields` steps show them.
fn predictions_shown_by(plan: &OutputPlan) -> Predictions {
    let OutputPlan::Classifier { after, .. } = plan else {
        panic!("not a classifier")
    };
    let mut p = predictions();
    if let Predictions::Classifier { shown, .. } = &mut p {
        *shown = after.shown().cloned();
    }
    p
}

fn predictions() -> Predictions {
    Predictions::Classifier {
        labels: vec![Label::Str("male".into()), Label::Str("female".into())],
        classes: vec!["female".into(), "male".into()],
        probabilities: vec![0.25, 0.75, 0.5, 0.5],
        shown: None,
    }
}

#[test]
fn fields_on_a_raw_answer_are_parameters_and_may_not_hide_an_output() {
    use crate::model::{ModelConfig, ModelSignature, OutputData, OutputSpec, OutputTensor};
    use crate::model::{OutputType, Outputs};
    let sig = ModelSignature::new(
        test_sig::tensor3().inputs,
        vec![
            OutputSpec {
                name: "y".into(),
                ty: OutputType::Tensor {
                    elem: "float32".into(),
                    shape: vec![-1, 3],
                },
            },
            OutputSpec {
                name: "z".into(),
                ty: OutputType::Tensor {
                    elem: "float64".into(),
                    shape: vec![-1],
                },
            },
        ],
        None,
        &ModelConfig::default(),
    )
    .unwrap();
    let config = |fields: &str| ModelConfig {
        steps: serde_json::from_str(&format!(
            r#"{{"after": [{{"step": "fields", "fields": {fields}}}]}}"#
        ))
        .unwrap(),
        ..Default::default()
    };
    let e = OutputPlan::choose(&sig, &config(r#"{"z": 1}"#)).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"z\" is also the name of one of the model's outputs"),
        "{e}"
    );
    let plan = OutputPlan::choose(&sig, &config(r#"{"version": "r9"}"#)).unwrap();
    // apply gives the answer its fields.
    let p = plan
        .apply(Outputs {
            rows: 1,
            tensors: vec![
                OutputTensor {
                    name: "y".into(),
                    shape: vec![1, 3],
                    data: OutputData::F32(vec![1.0, 2.0, 3.0]),
                },
                OutputTensor {
                    name: "z".into(),
                    shape: vec![1],
                    data: OutputData::F64(vec![4.5]),
                },
            ],
        })
        .unwrap();
    let answer = Answer {
        id: None,
        outputs: Some(vec![("z".to_string(), None)]),
        binary_default: false,
    };
    let e = encode(p, &outputs(&sig, &plan, None), &answer, "m", "1").unwrap();
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["parameters"], json!({"version": "r9"}));
    assert_eq!(
        v["outputs"],
        json!([{"name": "z", "datatype": "FP64", "shape": [1], "data": [4.5]}])
    );
}

#[test]
fn a_top_k_output_asked_for_as_binary_data_is_length_prefixed_text() {
    let (sig, plan) = classifier_with_steps(r#"[{"step": "top_k", "k": 2}]"#);
    let p = predictions_shown_by(&plan);
    let answer = Answer {
        id: None,
        outputs: Some(vec![("probabilities".to_string(), Some(true))]),
        binary_default: false,
    };
    let e = encode(p, &outputs(&sig, &plan, None), &answer, "m", "1").unwrap();
    let n = e.header_len.expect("binary data follows");
    let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
    assert_eq!(v["outputs"][0]["datatype"], "BYTES");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
    let mut cells = Vec::new();
    let mut rest = &e.body[n..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        cells.push(String::from_utf8(rest[4..4 + len].to_vec()).unwrap());
        rest = &rest[4 + len..];
    }
    assert_eq!(
        cells,
        ["0.75:1:male", "0.25:0:female", "0.5:0:female", "0.5:1:male"]
    );
}

#[test]
fn top_k_answers_as_triton_classification_and_fields_as_parameters() {
    let (sig, plan) = classifier_with_steps(
        r#"[{"step": "top_k", "k": 1}, {"step": "fields", "fields": {"version": "7b", "n": 2}}]"#,
    );
    let metas = outputs(&sig, &plan, None);
    assert_eq!(
        (metas[1].datatype, &metas[1].shape),
        ("BYTES", &vec![-1, 1])
    );
    let p = predictions_shown_by(&plan);
    let answer = Answer {
        id: None,
        outputs: None,
        binary_default: false,
    };
    let e = encode(p, &metas, &answer, "m", "1").unwrap();
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["parameters"], json!({"n": 2, "version": "7b"}));
    assert_eq!(v["outputs"][1]["datatype"], "BYTES");
    assert_eq!(v["outputs"][1]["shape"], json!([2, 1]));
    // Row 2 ties: the first class wins, as in the model's order.
    assert_eq!(
        v["outputs"][1]["data"],
        json!(["0.75:1:male", "0.5:0:female"])
    );
    // Without the steps there are no parameters.
    let (sig, plan) = classifier_sig();
    let e = encode(
        predictions(),
        &outputs(&sig, &plan, None),
        &answer,
        "m",
        "1",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert!(v.get("parameters").is_none(), "{v}");
}

#[test]
fn answers_hold_what_was_asked_as_json_or_binary() {
    let (sig, plan) = classifier_sig();
    let metas = outputs(&sig, &plan, None);
    assert_eq!(metas[0].datatype, "BYTES");
    assert_eq!(metas[1].shape, vec![-1, 2]);
    let answer = |outputs, binary_default| Answer {
        id: Some("7".into()),
        outputs,
        binary_default,
    };
    let json_only = encode(predictions(), &metas, &answer(None, false), "m", "1").unwrap();
    assert!(json_only.header_len.is_none());
    let v: Value = serde_json::from_slice(&json_only.body).unwrap();
    assert_eq!(v["id"], "7");
    assert_eq!(v["outputs"][0]["data"], json!(["male", "female"]));
    assert_eq!(v["outputs"][1]["data"], json!([0.25, 0.75, 0.5, 0.5]));

    // Probabilities only, as binary data.
    let asked = Some(vec![("probabilities".to_string(), Some(true))]);
    let e = encode(predictions(), &metas, &answer(asked, false), "m", "1").unwrap();
    let n = e.header_len.expect("binary data follows");
    let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(v["outputs"][0].get("data").is_none());
    assert_eq!(e.body[n..], f32s(&[0.25, 0.75, 0.5, 0.5]));

    // binary_data_output covers a listed output that does not say, not one that does.
    let asked = Some(vec![
        ("label".to_string(), Some(false)),
        ("probabilities".to_string(), None),
    ]);
    let e = encode(predictions(), &metas, &answer(asked, true), "m", "1").unwrap();
    let n = e.header_len.unwrap();
    let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
    assert_eq!(v["outputs"][0]["data"], json!(["male", "female"]));
    assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 16);
    let listed = decode_json(json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 3], "data": [1, 2, 3]}], "outputs": []}))
    .unwrap();
    assert!(
        listed.answer.outputs.is_none(),
        "an empty list is every output"
    );

    // Everything as binary: the label's BYTES, length-prefixed, first.
    let e = encode(predictions(), &metas, &answer(None, true), "m", "1").unwrap();
    let n = e.header_len.unwrap();
    let mut want = strings(&["male", "female"]);
    want.extend(f32s(&[0.25, 0.75, 0.5, 0.5]));
    assert_eq!(e.body[n..], want);
}

#[test]
fn inputs_say_any_rows_unless_fixed() {
    let sig = test_sig::tensor3();
    assert_eq!(
        inputs(&sig, None),
        vec![TensorMeta {
            name: "input",
            datatype: "FP32",
            shape: vec![-1, 3]
        }]
    );
    assert_eq!(inputs(&sig, Some(1))[0].shape, vec![1, 3]);
    let mixed: Vec<_> = inputs(&test_sig::mixed(), None)
        .into_iter()
        .map(|t| t.datatype)
        .collect();
    assert_eq!(mixed, vec!["BYTES", "INT64", "FP32"]);
}

#[test]
fn a_regressor_and_raw_zipmap_outputs_are_tensors() {
    use crate::model::{OutputData, OutputTensor};
    let meta = |name: &'static str, datatype, shape: Vec<i64>| TensorMeta {
        name,
        datatype,
        shape,
    };
    let answer = Answer {
        id: None,
        outputs: None,
        binary_default: false,
    };
    let p = Predictions::Regressor {
        values: vec![18.5, 20.25],
        float32: true,
        shown: None,
    };
    let e = encode(p, &[meta("age", "FP32", vec![-1, 1])], &answer, "m", "1").unwrap();
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([2, 1]));
    assert_eq!(v["outputs"][0]["datatype"], "FP32");
    assert_eq!(v["outputs"][0]["data"], json!([18.5, 20.25]));

    // ZipMap's maps, as selected raw outputs: the first row's class order for every row.
    let maps = vec![vec![(0i64, 0.25f32), (1, 0.75)], vec![(1, 0.5), (0, 0.5)]];
    let p = Predictions::Raw {
        rows: 2,
        tensors: vec![OutputTensor {
            name: "probs".into(),
            shape: vec![2],
            data: OutputData::MapI64(maps),
        }],
        shown: None,
    };
    let e = encode(p, &[meta("probs", "FP32", vec![-1, -1])], &answer, "m", "1").unwrap();
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
    assert_eq!(v["outputs"][0]["data"], json!([0.25, 0.75, 0.5, 0.5]));
}

#[test]
fn tensors_read_as_text_without_a_model() {
    let (body, n) = with_binary(
        json!({"inputs": [
            {"name": "x", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
            {"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], [null]]}]}),
        &[&[0.5f64, f64::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()],
    );
    let t = text_tensors(&body, Some(n), false).unwrap();
    assert_eq!(t[0].cells, vec!["0.5", ""]);
    assert_eq!(t[1].shape, vec![2, 1]);
    assert_eq!(t[1].cells, vec!["a", ""]);
    let m = text_tensors(
        br#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1]}]}"#,
        None,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(m.contains("holds 3 values, but its data has 1"), "{m}");
}

/// A request shaped like a real one, with random names, datatypes, shapes and data.
fn any_request() -> impl Strategy<Value = Vec<u8>> {
    let datatypes =
        prop::sample::select(vec!["FP32", "FP64", "INT64", "BYTES", "BOOL", "UINT8", "x"]);
    let names = prop::sample::select(vec!["city", "tier", "hours", "input", ""]);
    let data = prop_oneof![
        prop::collection::vec(any::<i32>().prop_map(Value::from), 0..6).prop_map(Value::from),
        prop::collection::vec("[a-z]{0,3}".prop_map(Value::from), 0..6).prop_map(Value::from),
        prop::collection::vec(
            prop::collection::vec(any::<f32>().prop_map(Value::from), 0..3).prop_map(Value::from),
            0..3
        )
        .prop_map(Value::from),
        Just(Value::Null),
    ];
    let input = (names, datatypes, prop::collection::vec(-2i64..4, 0..3), data).prop_map(
        |(name, datatype, shape, data)| json!({"name": name, "datatype": datatype, "shape": shape, "data": data}),
    );
    (prop::collection::vec(input, 0..4), any::<bool>()).prop_map(|(inputs, binary)| {
        json!({"inputs": inputs, "parameters": {"binary_data_output": binary},
               "outputs": [{"name": "label"}]})
        .to_string()
        .into_bytes()
    })
}

proptest! {
    #![proptest_config(cases(64))]

    /// Well-formed requests with wrong names, types, shapes and data (almost all refused):
    /// never a panic, and any accepted one fits the model.
    #[test]
    fn any_shaped_request_is_refused_or_fits_never_a_panic(body in any_request()) {
        if let Ok(r) = decode(&body, None, &test_sig::mixed(), &["label"]) {
            prop_assert!(r.frame.rows > 0);
            prop_assert!(r.frame.columns.iter().all(|c| c.len() == r.frame.rows));
        }
    }


    /// Any bytes, with or without a header length: a request or an error, never a panic.
    #[test]
    fn any_body_is_a_request_or_an_error(
        body in prop::collection::vec(any::<u8>(), 0..160),
        cut in prop::option::of(0usize..200),
    ) {
        let _ = decode(&body, cut, &test_sig::mixed(), &["label"]);
    }

    /// A valid request with one byte changed: still a request or an error.
    #[test]
    fn a_damaged_request_is_a_request_or_an_error(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (mut body, n) = with_binary(
            json!({"inputs": [
                {"name": "city", "datatype": "BYTES", "shape": [2, 1],
                 "parameters": {"binary_data_size": 17}},
                {"name": "tier", "datatype": "INT64", "shape": [2, 1], "data": [[3], [1]]},
                {"name": "hours", "datatype": "FP32", "shape": [2, 1], "data": [0.5, 1e3]},
            ], "outputs": [{"name": "label", "parameters": {"binary_data": true}}]}),
            &[&strings(&["Lagos", "Abuja"])],
        );
        let i = at.index(body.len());
        body[i] = byte;
        let _ = decode(&body, Some(n), &test_sig::mixed(), &["label"]);
    }

    /// Any decimal text, flat or nested, is rounded to f32 once, as Rust's own parser rounds
    /// it (serde would round to f64 first).
    #[test]
    fn decimals_are_rounded_once_flat_or_nested(values in prop::collection::vec(
        any::<f64>().prop_filter("an f32's range", |x| x.is_finite() && x.abs() < 1e38 && x.abs() > 1e-30), 3..4)) {
        let texts: Vec<String> = values.iter().map(|x| format!("{x:.17e}")).collect();
        let want: Vec<u32> = texts.iter().map(|t| t.parse::<f32>().unwrap().to_bits()).collect();
        let read = |data: String| {
            let body = format!(r#"{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": {data}}}]}}"#);
            match decode(body.as_bytes(), None, &test_sig::tensor3(), &[]).unwrap().frame.columns.remove(0) {
                Column::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>(),
                other => panic!("{other:?}"),
            }
        };
        prop_assert_eq!(read(format!("[{}]", texts.join(", "))), want.clone());
        prop_assert_eq!(read(format!("[[{}]]", texts.join(", "))), want);
    }

    /// FP32 tensors are read bit for bit, as JSON and as binary data.
    #[test]
    fn floats_are_read_exactly(values in prop::collection::vec(
        any::<f32>().prop_filter("finite", |x| x.is_finite()), 1..8).prop_map(|v| {
            let rows = v.len();
            v.into_iter().cycle().take(rows * 3).collect::<Vec<f32>>()
        })) {
        let rows = values.len() / 3;
        let json_body = json!({"inputs": [{"name": "input", "datatype": "FP32",
            "shape": [rows, 3], "data": values}]});
        let r = decode_json(json_body).unwrap();
        prop_assert_eq!(&r.frame.columns[0], &Column::F32(values.clone()));
        let (body, n) = with_binary(json!({"inputs": [{"name": "input", "datatype": "FP32",
            "shape": [rows, 3], "parameters": {"binary_data_size": rows * 12}}]}), &[&f32s(&values)]);
        let r = decode(&body, Some(n), &test_sig::tensor3(), &[]).unwrap();
        prop_assert_eq!(&r.frame.columns[0], &Column::F32(values));
    }
}

/// What a one-row request costs to decode and answer, V2 JSON against `/invocations` JSON,
/// on the XGBoost example's shape: `cargo test --release --lib -- --ignored v2_cost --nocapture`.
#[test]
#[ignore]
fn v2_cost_of_one_row_against_invocations_json() {
    use crate::codec::{InputFormat, OutputFormat};
    let names: Vec<String> = (0..64).map(|i| format!("f{i}")).collect();
    let sig = test_sig::floats(&names);
    let row: Vec<f32> = (0..64).map(|i| i as f32 * 0.37 + 0.011).collect();
    let row_text = serde_json::to_string(&row).unwrap();
    let v2_body = format!(
        r#"{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": {}}}]}}"#,
        &row_text
    );
    let inv_body = format!(r#"{{"instances": [{row_text}]}}"#);
    let (osig, plan) = classifier_sig();
    let predictions = || Predictions::Classifier {
        labels: vec![Label::Int(0)],
        classes: vec!["0".into(), "1".into()],
        probabilities: vec![0.95, 0.05],
        shown: None,
    };
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let metas = outputs(&osig, &plan, None);
        let names: Vec<&str> = metas.iter().map(|m| m.name).collect();
        let r = decode(v2_body.as_bytes(), None, &sig, &names).unwrap();
        let e = encode(predictions(), &metas, &r.answer, "xgboost", "1").unwrap();
        std::hint::black_box((r.frame, e.body));
    }
    let v2 = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let f = crate::codec::decode(InputFormat::Json, inv_body.as_bytes(), &sig).unwrap();
        let e = crate::codec::encode(&predictions(), OutputFormat::Json);
        std::hint::black_box((f, e));
    }
    let inv = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!("per request: V2 JSON {v2:.2} µs, /invocations JSON {inv:.2} µs");
}
