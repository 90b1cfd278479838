//! What the fuzz targets share: the model signatures a body is decoded against, and the checks
//! every decode result must pass. A failed check panics, which libFuzzer reports as a crash
//! with the input that caused it.

use std::sync::OnceLock;

use mlapp::codec::{self, Column, DecodeError, Frame, InputFormat};
use mlapp::error::ApiError;
use mlapp::model::{ElemType, InputSpec, ModelConfig, ModelSignature};

/// A model's signature and a name for it in failure messages.
pub struct Sig {
    pub name: &'static str,
    pub sig: ModelSignature,
}

/// The models every body is tried against. Two match the example payloads (so the seeds reach
/// the success paths); two are small enough that libFuzzer finds valid rows by mutation.
pub fn signatures() -> &'static [Sig] {
    static SIGS: OnceLock<Vec<Sig>> = OnceLock::new();
    SIGS.get_or_init(|| {
        vec![
            Sig {
                name: "tensor3",
                sig: tensor("input", &["a", "b", "c"]),
            },
            Sig {
                name: "logreg",
                sig: logreg(),
            },
            Sig {
                name: "mixed",
                sig: mixed(),
            },
            Sig {
                name: "pipeline",
                sig: pipeline(),
            },
        ]
    })
}

/// One `[N, F]` float32 input whose F columns are named by the model config.
fn tensor(input: &str, features: &[&str]) -> ModelSignature {
    let cfg = ModelConfig {
        feature_names: features.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    };
    let width = features.len();
    ModelSignature::new(
        vec![InputSpec {
            name: input.into(),
            elem: ElemType::Float32,
            shape: vec![-1, width as i64],
            width,
        }],
        vec![],
        None,
        &cfg,
    )
    .expect("a valid signature")
}

/// The example logistic regression: 64 float32 features named in its mlapp.json.
fn logreg() -> ModelSignature {
    let cfg: ModelConfig = serde_json::from_str(include_str!(
        "../../examples/gender/models/logreg/mlapp.json"
    ))
    .expect("the example's mlapp.json parses");
    let names: Vec<&str> = cfg.feature_names.iter().map(String::as_str).collect();
    tensor("input", &names)
}

fn column(name: &str, elem: ElemType) -> InputSpec {
    InputSpec {
        name: name.into(),
        elem,
        shape: vec![-1, 1],
        width: 1,
    }
}

/// One `[N, 1]` input of every element type a decoder can produce.
fn mixed() -> ModelSignature {
    ModelSignature::new(
        vec![
            column("city", ElemType::String),
            column("tier", ElemType::Int64),
            column("hours", ElemType::Float32),
            column("score", ElemType::Float64),
            column("count", ElemType::Int32),
            column("flag", ElemType::Bool),
        ],
        vec![],
        None,
        &ModelConfig::default(),
    )
    .expect("a valid signature")
}

/// The example sklearn pipeline: 41 `[N, 1]` inputs, five strings, an int64, then float32s,
/// named (in input order) by the header of its CSV payload.
fn pipeline() -> ModelSignature {
    let header = include_str!("../../examples/gender/payloads/pipeline/rows_header.csv")
        .lines()
        .next()
        .expect("a header line");
    let inputs = header
        .split(',')
        .enumerate()
        .map(|(i, name)| {
            let elem = match i {
                0..=4 => ElemType::String,
                5 => ElemType::Int64,
                _ => ElemType::Float32,
            };
            column(name, elem)
        })
        .collect();
    ModelSignature::new(inputs, vec![], None, &ModelConfig::default()).expect("a valid signature")
}

/// Decodes `body` against every signature and checks each result.
pub fn decode_all(format: InputFormat, body: &[u8]) {
    for s in signatures() {
        let result = codec::decode(format, body, &s.sig);
        check(format, s, &result);
        if let Ok(frame) = &result {
            if let Some(ranges) = codec::row_chunks(format, body, 8) {
                check_chunks(format, s, body, &ranges, frame);
            }
        }
    }
}

/// A decode result is either a frame of the signature's shape or an error the client is to
/// blame for (4xx) with a message that says where.
pub fn check(format: InputFormat, s: &Sig, result: &Result<Frame, DecodeError>) {
    match result {
        Ok(frame) => check_frame(format, s, frame),
        Err(e) => check_error(format, s, e),
    }
}

pub fn check_frame(format: InputFormat, s: &Sig, frame: &Frame) {
    let sig = &s.sig;
    let name = s.name;
    assert!(frame.rows > 0, "{format:?}/{name}: a frame with no rows");
    assert_eq!(
        frame.columns.len(),
        sig.inputs.len(),
        "{format:?}/{name}: one column per input"
    );
    for (col, input) in frame.columns.iter().zip(&sig.inputs) {
        assert_eq!(
            col.len(),
            frame.rows * input.width,
            "{format:?}/{name}: input {} holds rows x width cells",
            input.name
        );
        let typed = matches!(
            (col, input.elem),
            (Column::F32(_), ElemType::Float32)
                | (Column::F64(_), ElemType::Float64)
                | (Column::I64(_), ElemType::Int64)
                | (Column::I32(_), ElemType::Int32)
                | (Column::Bool(_), ElemType::Bool)
                | (Column::Str(_), ElemType::String)
        );
        assert!(
            typed,
            "{format:?}/{name}: input {} decoded as the wrong type",
            input.name
        );
    }
    if let Some(n) = sig.fixed_batch {
        assert_eq!(frame.rows, n, "{format:?}/{name}: fixed batch");
    }
}

pub fn check_error(format: InputFormat, s: &Sig, e: &DecodeError) {
    let name = s.name;
    let text = e.to_string();
    assert!(
        !text.is_empty(),
        "{format:?}/{name}: an error with no message"
    );
    // Row numbers are 1-based, as the client counts them.
    match e {
        DecodeError::FeatureCount { row, .. }
        | DecodeError::MissingFeature { row, .. }
        | DecodeError::UnknownFeature { row, .. } => {
            assert!(*row >= 1, "{format:?}/{name}: row 0 in \"{text}\"")
        }
        DecodeError::Value { row, column, .. } => {
            assert!(*row >= 1, "{format:?}/{name}: row 0 in \"{text}\"");
            assert!(*column >= 1, "{format:?}/{name}: column 0 in \"{text}\"");
        }
        _ => {}
    }
    let code = e.code();
    let located = rebuild(e).located(3, 5).to_string();
    assert!(!located.is_empty());
    let api = ApiError::from(rebuild(e));
    let status = api.status();
    assert!(
        status == 400 || status == 422,
        "{format:?}/{name}: \"{text}\" answers {status}, not 400 or 422"
    );
    assert_eq!(api.code(), code);
    let body: serde_json::Value =
        serde_json::from_slice(&api.body()).expect("an error body is JSON");
    assert_eq!(body["error"]["code"], code, "{format:?}/{name}");
    let message = body["error"]["message"]
        .as_str()
        .expect("an error message is a string");
    // The body keeps to what SageMaker passes on (2048 characters): the message is cut.
    assert!(
        message.chars().count() <= 1903,
        "{format:?}/{name}: a message of {} characters",
        message.chars().count()
    );
}

/// DecodeError is not Clone: the same error again, for the conversions that consume it.
fn rebuild(e: &DecodeError) -> DecodeError {
    match e {
        DecodeError::Syntax { format, detail } => DecodeError::Syntax {
            format,
            detail: detail.clone(),
        },
        DecodeError::Empty => DecodeError::Empty,
        DecodeError::FeatureCount {
            row,
            expected,
            got,
            features,
        } => DecodeError::FeatureCount {
            row: *row,
            expected: *expected,
            got: *got,
            features: features.clone(),
        },
        DecodeError::Value {
            row,
            column,
            feature,
            expected,
            got,
        } => DecodeError::Value {
            row: *row,
            column: *column,
            feature: feature.clone(),
            expected,
            got: got.clone(),
        },
        DecodeError::MissingFeature { row, feature } => DecodeError::MissingFeature {
            row: *row,
            feature: feature.clone(),
        },
        DecodeError::UnknownFeature {
            row,
            name,
            features,
        } => DecodeError::UnknownFeature {
            row: *row,
            name: name.clone(),
            features: features.clone(),
        },
        DecodeError::Shape(s) => DecodeError::Shape(s.clone()),
        DecodeError::DuplicateKey { row, key, place } => DecodeError::DuplicateKey {
            row: *row,
            key: key.clone(),
            place: place.clone(),
        },
    }
}

/// A large line-oriented body is scored piece by piece (`row_chunks`, then each piece
/// decoded alone): when the whole body decodes, its pieces decode to the same rows.
fn check_chunks(
    format: InputFormat,
    s: &Sig,
    body: &[u8],
    ranges: &[std::ops::Range<usize>],
    whole: &Frame,
) {
    let name = s.name;
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); whole.columns.len()];
    let mut rows = 0;
    for r in ranges {
        match codec::decode(format, &body[r.clone()], &s.sig) {
            Ok(piece) => {
                rows += piece.rows;
                for (all, col) in columns.iter_mut().zip(&piece.columns) {
                    all.extend(cells(col));
                }
            }
            Err(DecodeError::Empty) => {}
            Err(e) => {
                panic!("{format:?}/{name}: the whole body decodes but its piece {r:?} fails: {e}")
            }
        }
    }
    assert_eq!(rows, whole.rows, "{format:?}/{name}: rows of the pieces");
    for (i, col) in whole.columns.iter().enumerate() {
        assert_eq!(
            cells(col),
            columns[i],
            "{format:?}/{name}: input {i} decoded piece by piece"
        );
    }
}

/// Whether two frames hold the same cells, NaN included (`Frame`'s `==` says NaN != NaN).
pub fn same_frame(a: &Frame, b: &Frame) -> bool {
    a.rows == b.rows
        && a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| cells(x) == cells(y))
}

/// Cells as text, so that NaN compares equal to NaN (and -0.0 differs from 0.0).
pub fn cells(col: &Column) -> Vec<String> {
    match col {
        Column::F32(v) => v.iter().map(|x| format!("{:?}", x.to_bits())).collect(),
        Column::F64(v) => v.iter().map(|x| format!("{:?}", x.to_bits())).collect(),
        Column::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        Column::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        Column::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        Column::Str(v) => v.clone(),
    }
}
