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
    // Binary data without the header: the JSON parse fails at the bytes after it.
    let (body, _) = with_binary(header(9, 4), &[&lagos, &f32s(&[1.0])]);
    assert!(decode(&body, None, &sig, &[]).is_err());
}

fn classifier_sig() -> (crate::model::ModelSignature, OutputPlan) {
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
        ..Default::default()
    };
    let plan = OutputPlan::choose(&sig, &config).unwrap();
    (sig, plan)
}

fn predictions() -> Predictions {
    Predictions::Classifier {
        labels: vec![Label::Str("male".into()), Label::Str("female".into())],
        classes: vec!["female".into(), "male".into()],
        probabilities: vec![0.25, 0.75, 0.5, 0.5],
    }
}

#[test]
fn answers_hold_what_was_asked_as_json_or_binary() {
    let (sig, plan) = classifier_sig();
    let metas = outputs(&sig, &plan);
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
    let asked = Some(vec![("probabilities".to_string(), true)]);
    let e = encode(predictions(), &metas, &answer(asked, false), "m", "1").unwrap();
    let n = e.header_len.expect("binary data follows");
    let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(v["outputs"][0].get("data").is_none());
    assert_eq!(e.body[n..], f32s(&[0.25, 0.75, 0.5, 0.5]));

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
            name: "input".into(),
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

proptest! {
    #![proptest_config(cases(64))]

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

    /// FP32 tensors read back bit for bit, as JSON and as binary data.
    #[test]
    fn floats_round_trip_exactly(values in prop::collection::vec(
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
