//! Property tests of the decoders: any body gets a frame the model can run or a 4xx, never a
//! panic; and rows written in any accepted format read back as the same values.
//!
//! Case counts are small so that `cargo test` stays fast; raise `PROPTEST_CASES` to search
//! longer (`PROPTEST_CASES=5000 cargo test --lib codec::props`).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;

use super::{decode, records, Column, DecodeError, Frame, InputFormat};
use crate::error::ApiError;
use crate::model::{ElemType, InputSpec, ModelConfig, ModelSignature};

mod round_trip;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gender");

const FORMATS: [InputFormat; 5] = [
    InputFormat::Csv { header: false },
    InputFormat::Csv { header: true },
    InputFormat::Json,
    InputFormat::JsonLines,
    InputFormat::Npy,
];

fn config(names: Vec<String>) -> ModelConfig {
    ModelConfig {
        feature_names: names,
        ..Default::default()
    }
}

fn input(name: &str, elem: ElemType, width: usize) -> InputSpec {
    InputSpec {
        name: name.into(),
        elem,
        shape: vec![-1, width as i64],
        width,
    }
}

/// An example model's signature as ONNX Runtime reports it (`mlapp inspect`), built without
/// loading the model: one `[N, F]` float input named by `mlapp.json`, or, for the pipeline,
/// one `[N, 1]` input per raw column.
fn example(model: &str) -> ModelSignature {
    let dir = Path::new(EXAMPLES).join("models").join(model);
    if model == "pipeline" {
        let header =
            std::fs::read_to_string(Path::new(EXAMPLES).join("payloads/pipeline/rows_header.csv"))
                .unwrap();
        let inputs = header
            .lines()
            .next()
            .unwrap()
            .split(',')
            .enumerate()
            .map(|(i, name)| {
                let elem = match i {
                    0..=4 => ElemType::String,
                    5 => ElemType::Int64,
                    _ => ElemType::Float32,
                };
                input(name, elem, 1)
            })
            .collect();
        return ModelSignature::new(inputs, vec![], None, &ModelConfig::default()).unwrap();
    }
    let cfg = ModelConfig::read(&dir.join("mlapp.json"))
        .unwrap()
        .unwrap_or_default();
    let width = if cfg.feature_names.is_empty() {
        64 // xgboost: no config, features input_0..input_63
    } else {
        cfg.feature_names.len()
    };
    ModelSignature::new(
        vec![input("input", ElemType::Float32, width)],
        vec![],
        None,
        &cfg,
    )
    .unwrap()
}

/// Every element type mlapp feeds, with inputs of width 1 and more.
fn every_type() -> ModelSignature {
    ModelSignature::new(
        vec![
            input("s", ElemType::String, 1),
            input("d", ElemType::Float64, 2),
            input("i", ElemType::Int32, 1),
            input("b", ElemType::Bool, 1),
            input("l", ElemType::Int64, 1),
            input("f", ElemType::Float32, 3),
        ],
        vec![],
        None,
        &config(vec![]),
    )
    .unwrap()
}

const MODELS: [&str; 5] = ["logreg", "agereg", "mlp", "xgboost", "pipeline"];

/// The signatures bodies are decoded against: the examples', and two small ones.
fn signatures() -> &'static [ModelSignature] {
    static SIGS: OnceLock<Vec<ModelSignature>> = OnceLock::new();
    SIGS.get_or_init(|| {
        let mut sigs: Vec<ModelSignature> = MODELS.iter().map(|m| example(m)).collect();
        sigs.push(super::test_sig::tensor3());
        sigs.push(super::test_sig::mixed());
        sigs.push(every_type());
        sigs
    })
}

/// The example payloads: (model index in MODELS, format, body).
fn payloads() -> &'static [(usize, InputFormat, Vec<u8>)] {
    static PAYLOADS: OnceLock<Vec<(usize, InputFormat, Vec<u8>)>> = OnceLock::new();
    PAYLOADS.get_or_init(|| {
        let mut out = Vec::new();
        for (m, model) in MODELS.iter().enumerate() {
            let dir = Path::new(EXAMPLES).join("payloads").join(model);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for path in files {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let format = if name.ends_with("_header.csv") {
                    InputFormat::Csv { header: true }
                } else if name.ends_with(".csv") {
                    InputFormat::Csv { header: false }
                } else if name.ends_with(".jsonl") {
                    InputFormat::JsonLines
                } else if name.ends_with(".json") {
                    InputFormat::Json
                } else if name.ends_with(".npy") {
                    InputFormat::Npy
                } else {
                    continue;
                };
                out.push((m, format, std::fs::read(&path).unwrap()));
            }
        }
        assert!(out.len() >= 40, "example payloads missing: {}", out.len());
        out
    })
}

/// What a decoder may answer: a frame whose every column has the rows × width the model's
/// input needs, of its type, with no string ORT cannot take; or an error the client is told
/// about with a 4xx and a valid, bounded JSON body.
fn check(result: Result<Frame, DecodeError>, sig: &ModelSignature) -> Result<(), TestCaseError> {
    match result {
        Ok(frame) => {
            prop_assert!(frame.rows > 0);
            prop_assert_eq!(frame.columns.len(), sig.inputs.len());
            for (column, input) in frame.columns.iter().zip(&sig.inputs) {
                prop_assert_eq!(column.len(), frame.rows * input.width);
                let type_fits = matches!(
                    (column, input.elem),
                    (Column::F32(_), ElemType::Float32)
                        | (Column::F64(_), ElemType::Float64)
                        | (Column::I64(_), ElemType::Int64)
                        | (Column::I32(_), ElemType::Int32)
                        | (Column::Bool(_), ElemType::Bool)
                        | (Column::Str(_), ElemType::String)
                );
                prop_assert!(type_fits, "{:?} for {:?}", column, input.elem);
                if let Column::Str(v) = column {
                    prop_assert!(v.iter().all(|s| !s.contains('\0')));
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.is_empty());
            let api = ApiError::from(e);
            prop_assert!((400..500).contains(&api.status()), "{}", message);
            let body = api.body();
            prop_assert!(body.len() <= 2048);
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        }
    }
    Ok(())
}

/// Decodes a body every way: each format against each signature, and the line-oriented
/// formats as records, with and without placeholders.
fn decode_everyhow(body: &[u8]) -> Result<(), TestCaseError> {
    for sig in signatures() {
        for format in FORMATS {
            check(decode(format, body, sig), sig)?;
        }
        check_records(body, sig)?;
    }
    Ok(())
}

fn check_records(body: &[u8], sig: &ModelSignature) -> Result<(), TestCaseError> {
    for format in [InputFormat::Csv { header: false }, InputFormat::JsonLines] {
        for placeholders in [false, true] {
            match records::decode(format, body, sig, placeholders) {
                Ok(rows) => {
                    prop_assert!(rows.bad.len() <= rows.total);
                    let good = rows.frame.as_ref().map_or(0, |f| f.rows);
                    prop_assert_eq!(good + rows.bad.len(), rows.total);
                    prop_assert!(rows.bad.iter().all(|(i, _)| *i < rows.total));
                    if let Some(frame) = rows.frame {
                        check(Ok(frame), sig)?;
                    }
                }
                Err(e) => {
                    prop_assert!(!placeholders, "placeholder mode failed: {}", e);
                    check(Err(e), sig)?;
                }
            }
        }
    }
    Ok(())
}

/// Pieces of the formats' syntax, so that random bodies get past the first byte.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"\n",
    b"\r",
    b"\r\n",
    b" ",
    b"\0",
    b"1",
    b"-2.5e3",
    b"0.1",
    b"1e999",
    b"-",
    b".",
    b"nan",
    b"\"a\"",
    b"\"b\"",
    b"\"c\"",
    b"\"city\"",
    b"\"tier\"",
    b"\"hours\"",
    b"\"s\"",
    b"\"d_0\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"x\\\"y\"",
    b"null",
    b"true",
    b"false",
    b"\"instances\"",
    b"\"inputs\"",
    b"\"input\"",
    b"a",
    b"b",
    b"c",
    b"city",
    b"tier",
    b"hours",
    "é".as_bytes(),
    "\u{1F600}".as_bytes(),
    "\u{feff}".as_bytes(),
    b"\xff",
    b"\x93NUMPY",
    b"'descr'",
    b"'<f4'",
    b"'<f8'",
    b"'|b1'",
    "'é4'".as_bytes(),
    b"'shape'",
    b"'fortran_order'",
    b"False",
    b"True",
    b"(",
    b")",
    b"(1, 3)",
    b"2L",
    b"\\",
];

fn token_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 1..4),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

/// An .npy body: magic, version (1, 2, 3 or another), header length (right or not), header
/// text, data.
fn npy_with(version: u8, header: Vec<u8>, exact_len: bool, data: Vec<u8>) -> Vec<u8> {
    let len = if exact_len {
        header.len()
    } else {
        header.len() + data.len() / 2
    };
    let mut out = super::npy::MAGIC.to_vec();
    out.extend([version, 0]);
    if version == 1 {
        out.extend((len as u16).to_le_bytes());
    } else {
        out.extend((len as u32).to_le_bytes());
    }
    out.extend(header);
    out.extend(data);
    out
}

const DTYPES: [(&str, usize); 11] = [
    ("<f4", 4),
    ("<f8", 8),
    ("|i1", 1),
    ("<i2", 2),
    ("<i4", 4),
    ("<i8", 8),
    ("|u1", 1),
    ("<u2", 2),
    ("<u4", 4),
    ("<u8", 8),
    ("|b1", 1),
];

fn shape_text(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Header values: any short text as a descr (most characters are not ASCII), booleans,
/// tuples, or a syntax token.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[<|=>]?\\PC{0,3}".prop_map(|d| format!("'{d}'")),
        prop::sample::select(DTYPES.to_vec()).prop_map(|(d, _)| format!("\"{d}\"")),
        any::<bool>().prop_map(|b| if b { "True" } else { "False" }.to_string()),
        prop::collection::vec(0..5usize, 0..4).prop_map(|d| shape_text(&d)),
        prop::sample::select(TOKENS).prop_map(|t| String::from_utf8_lossy(t).into_owned()),
    ]
}

fn npy_body() -> impl Strategy<Value = Vec<u8>> {
    let version = prop::sample::select(vec![1u8, 1, 1, 2, 3, 0, 9]);
    // A valid header and exactly the data its shape needs, of random bytes.
    let valid = (
        prop::sample::select(DTYPES.to_vec()),
        prop::collection::vec(0..6usize, 1..3),
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|((descr, size), dims, mut data)| {
            let header = format!(
                "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}\n",
                shape_text(&dims)
            );
            data.resize(dims.iter().product::<usize>() * size, 0);
            npy_with(1, header.into_bytes(), true, data)
        });
    // numpy's three keys, in any order, the descr any short text (mostly not ASCII).
    let descr = prop_oneof![
        "\\PC{0,3}",
        "[<|=>]\\PC{0,3}",
        prop::sample::select(DTYPES.to_vec()).prop_map(|(d, _)| d.to_string()),
    ];
    let numpy = (
        descr,
        any::<bool>(),
        prop::collection::vec(0..5usize, 0..4),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_flat_map(|(descr, fortran, dims, data)| {
            let entries = vec![
                format!("'descr': '{descr}'"),
                format!(
                    "'fortran_order': {}",
                    if fortran { "True" } else { "False" }
                ),
                format!("'shape': {}", shape_text(&dims)),
            ];
            (Just(entries).prop_shuffle(), Just(data))
        })
        .prop_map(|(entries, data)| {
            let header = format!("{{{}}}\n", entries.join(", "));
            npy_with(1, header.into_bytes(), true, data)
        });
    // Any keys, in any order, with any values.
    let keys = (
        prop::sample::select(vec![
            "'descr'",
            "\"descr\"",
            "'shape'",
            "'fortran_order'",
            "'x'",
        ]),
        header_value(),
    )
        .prop_map(|(k, v)| format!("{k}: {v}"));
    let dict = (
        version.clone(),
        prop::collection::vec(keys, 0..5).prop_shuffle(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(version, entries, exact, data)| {
            let header = format!("{{{}}}\n", entries.join(", "));
            npy_with(version, header.into_bytes(), exact, data)
        });
    let tokens = (
        version,
        prop::collection::vec(prop::sample::select(TOKENS), 0..24),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(version, tokens, exact, data)| {
            let header = [&b"{"[..], &tokens.concat(), b"}\n"].concat();
            npy_with(version, header, exact, data)
        });
    prop_oneof![2 => valid, 2 => numpy, 1 => dict, 1 => tokens]
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, &'static [u8]),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1..256usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| i.index(len + 1);
    match m {
        Mutation::Flip(i, b) if !body.is_empty() => {
            let p = i.index(body.len());
            body[p] = *b;
        }
        Mutation::Flip(..) => {}
        Mutation::Insert(i, t) => {
            let p = at(i, body.len());
            body.splice(p..p, t.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let p = at(i, body.len());
            body.drain(p..(p + n).min(body.len()));
        }
        Mutation::Duplicate(i, n) => {
            let p = at(i, body.len());
            let piece = body[p..(p + n).min(body.len())].to_vec();
            body.splice(p..p, piece);
        }
        Mutation::Truncate(i) => body.truncate(at(i, body.len())),
    }
}

/// `n` cases (`PROPTEST_CASES` overrides), failures not persisted: the suites' one config.
pub(crate) fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        // Failures found are kept as plain unit tests in the decoders' modules instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..96)) {
        decode_everyhow(&body)?;
    }

    #[test]
    fn random_token_bodies_never_panic(body in token_body()) {
        decode_everyhow(&body)?;
    }

    #[test]
    fn random_npy_headers_never_panic(body in npy_body()) {
        for sig in signatures() {
            check(decode(InputFormat::Npy, &body, sig), sig)?;
        }
    }

    #[test]
    fn mutated_example_payloads_never_panic(
        which in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
        other in any::<Index>(),
    ) {
        let (model, format, body) = &payloads()[which.index(payloads().len())];
        let mut body = body.clone();
        for m in &mutations {
            mutate(&mut body, m);
        }
        // Against the payload's own model, where most of it still decodes, and one other.
        let sigs = signatures();
        for sig in [&sigs[*model], &sigs[other.index(sigs.len())]] {
            check(decode(*format, &body, sig), sig)?;
            if super::line_oriented(*format, &body) {
                check_records(&body, sig)?;
            }
        }
    }
}

#[test]
fn the_example_payloads_decode_for_their_models() {
    // The base of the mutation test: unmutated, every payload is a frame for its model.
    for (model, format, body) in payloads() {
        let sig = &signatures()[*model];
        let frame = decode(*format, body, sig)
            .unwrap_or_else(|e| panic!("{} {format:?}: {e}", MODELS[*model]));
        assert!(frame.rows > 1);
        check(Ok(frame), sig).unwrap();
    }
}
