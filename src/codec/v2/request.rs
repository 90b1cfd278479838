//! An inference request: its JSON object, then (binary tensor data extension) the bytes of
//! the inputs that give a `binary_data_size`, in the order the JSON lists them.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{datatype, DATATYPES};
use crate::codec::{Column, DecodeError, Frame};
use crate::model::{ElemType, InputSpec, ModelSignature};

/// The header that gives the length of the JSON object when binary data follows it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A decoded request: the rows for the model and what the answer should hold.
#[derive(Debug)]
pub struct InferRequest {
    pub frame: Frame,
    pub answer: Answer,
}

/// What the answer to a request holds.
#[derive(Debug)]
pub struct Answer {
    pub id: Option<String>,
    /// The outputs asked for by name, each with whether it goes back as binary data; None:
    /// every output, as `binary_default` says.
    pub outputs: Option<Vec<(String, bool)>>,
    pub binary_default: bool,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<Input<'a>>,
    #[serde(default)]
    outputs: Option<Vec<Requested>>,
}

#[derive(Deserialize)]
struct Input<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Requested {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError::syntax("json", detail)
}

fn wrong(detail: impl Into<String>) -> DecodeError {
    DecodeError::Shape(detail.into())
}

/// A boolean parameter; absent is false.
fn flag(params: Option<&Map<String, Value>>, key: &str, whose: &str) -> Result<bool, DecodeError> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(format!(
            "{whose}: parameter \"{key}\" must be true or false, got {other}"
        ))),
    }
}

/// Decodes `body` for a model with signature `sig`. `header_len` is the request's
/// Inference-Header-Content-Length, when binary data follows the JSON.
pub fn decode(
    body: &[u8],
    header_len: Option<usize>,
    sig: &ModelSignature,
    output_names: &[&str],
) -> Result<InferRequest, DecodeError> {
    let (json, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(bad(format!(
                "Inference-Header-Content-Length is {n}, but the body has only {} bytes",
                body.len()
            )))
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let header: Header<'_> =
        serde_json::from_slice(json).map_err(|e| bad(format!("invalid inference request: {e}")))?;
    if flag(header.parameters.as_ref(), "classification", "request")? {
        return Err(wrong(CLASSIFICATION));
    }
    let binary_default = flag(header.parameters.as_ref(), "binary_data_output", "request")?;
    let outputs = header
        .outputs
        .map(|asked| requested(asked, output_names))
        .transpose()?;

    // Each input's binary data, cut in the order the JSON lists the inputs.
    let mut pieces: Vec<Option<&[u8]>> = Vec::with_capacity(header.inputs.len());
    for input in &header.inputs {
        let size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                        "input \"{}\": binary_data_size must be a whole number of bytes, got {v}",
                        input.name
                    ))
                    })?,
            ),
        };
        pieces.push(match size {
            None => None,
            Some(n) if n > binary.len() => {
                return Err(bad(format!(
                    "input \"{}\": binary_data_size is {n}, but only {} bytes of binary data are left{}",
                    input.name,
                    binary.len(),
                    if header_len.is_none() {
                        " (binary data needs the Inference-Header-Content-Length header)"
                    } else {
                        ""
                    }
                )))
            }
            Some(n) => {
                let (piece, rest) = binary.split_at(n);
                binary = rest;
                Some(piece)
            }
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes follow the JSON object that no input's binary_data_size accounts for",
            binary.len()
        )));
    }

    for (k, input) in header.inputs.iter().enumerate() {
        if sig.inputs.iter().all(|s| s.name != input.name) {
            return Err(wrong(format!(
                "unknown input \"{}\"; the model takes: {}",
                input.name,
                takes(sig)
            )));
        }
        if header.inputs[..k].iter().any(|i| i.name == input.name) {
            return Err(bad(format!("input \"{}\" is given twice", input.name)));
        }
    }
    let mut rows = None;
    let mut columns = Vec::with_capacity(sig.inputs.len());
    for spec in &sig.inputs {
        let Some(k) = header.inputs.iter().position(|i| i.name == spec.name) else {
            return Err(wrong(format!(
                "missing input \"{}\"; the model takes: {}",
                spec.name,
                takes(sig)
            )));
        };
        let input = &header.inputs[k];
        let n = check_shape(input, spec, rows)?;
        rows = Some(n);
        let count = n.checked_mul(spec.width).ok_or_else(|| {
            wrong(format!(
                "input \"{}\": shape {:?} is too large",
                spec.name, input.shape
            ))
        })?;
        columns.push(column(input, spec, pieces[k], count)?);
    }
    let rows = rows.unwrap_or(0);
    if rows == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(InferRequest {
        frame: Frame { rows, columns },
        answer: Answer {
            id: header.id,
            outputs,
            binary_default,
        },
    })
}

const CLASSIFICATION: &str = "the classification extension is not supported: ask for the \
     probabilities output, which holds every class's score";

fn requested(asked: Vec<Requested>, names: &[&str]) -> Result<Vec<(String, bool)>, DecodeError> {
    let mut out: Vec<(String, bool)> = Vec::with_capacity(asked.len());
    for r in asked {
        if !names.contains(&r.name.as_str()) {
            return Err(wrong(format!(
                "unknown output \"{}\"; the model answers with: {}",
                r.name,
                names.join(", ")
            )));
        }
        if out.iter().any(|(n, _)| *n == r.name) {
            return Err(bad(format!("output \"{}\" is asked for twice", r.name)));
        }
        let whose = format!("output \"{}\"", r.name);
        if r.parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("classification"))
        {
            return Err(wrong(CLASSIFICATION));
        }
        let binary = flag(r.parameters.as_ref(), "binary_data", &whose)?;
        out.push((r.name, binary));
    }
    Ok(out)
}

/// The model's inputs as a message lists them.
fn takes(sig: &ModelSignature) -> String {
    super::inputs(sig, None)
        .iter()
        .map(|t| format!("{} ({} {:?})", t.name, t.datatype, t.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the datatype and shape against the model's input; the rows it holds.
fn check_shape(
    input: &Input<'_>,
    spec: &InputSpec,
    rows: Option<usize>,
) -> Result<usize, DecodeError> {
    let want = datatype(spec.elem);
    if input.datatype != want {
        let known = if DATATYPES.contains(&input.datatype.as_str()) {
            String::new()
        } else {
            format!(" (the protocol's datatypes are {})", DATATYPES.join(", "))
        };
        return Err(wrong(format!(
            "input \"{}\": datatype {:?}, but the model takes {want}{known}",
            input.name, input.datatype
        )));
    }
    let expected = || match spec.shape.len() {
        1 => "[rows]".to_string(),
        _ => format!("[rows, {}]", spec.width),
    };
    let dims: Option<Vec<usize>> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect();
    let fits = match (dims.as_deref(), spec.shape.len()) {
        (Some([n]), 1) => Some(*n),
        (Some([n, w]), 2) if *w == spec.width => Some(*n),
        _ => None,
    };
    let Some(n) = fits else {
        return Err(wrong(format!(
            "input \"{}\": shape {:?}, but the model takes {}",
            input.name,
            input.shape,
            expected()
        )));
    };
    if let Some(r) = rows.filter(|&r| r != n) {
        return Err(wrong(format!(
            "input \"{}\" has {n} rows, but the inputs before it have {r}: every input holds the same rows",
            input.name
        )));
    }
    Ok(n)
}

/// An input's values, `count` of them, from its JSON data or its binary piece.
fn column(
    input: &Input<'_>,
    spec: &InputSpec,
    binary: Option<&[u8]>,
    count: usize,
) -> Result<Column, DecodeError> {
    let name = &input.name;
    let column = match (binary, input.data) {
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "input \"{name}\" has both data and binary_data_size: give one"
            )))
        }
        (None, None) => return Err(bad(format!("input \"{name}\" has no data"))),
        (Some(bytes), None) => from_binary(name, spec.elem, bytes, count)?,
        (None, Some(raw)) => from_json(name, spec.elem, raw)?,
    };
    if column.len() != count {
        return Err(wrong(format!(
            "input \"{name}\": shape {:?} holds {count} values, but its data has {}",
            input.shape,
            column.len()
        )));
    }
    Ok(column)
}

fn from_json(name: &str, elem: ElemType, raw: &RawValue) -> Result<Column, DecodeError> {
    let fail = |e: serde_json::Error| {
        bad(format!(
            "input \"{name}\": its data does not hold {} values: {e}",
            datatype(elem)
        ))
    };
    // JSON has no NaN: null is a missing value (XGBoost's NaN), as in /invocations.
    let nan32 = |v: Vec<Option<f32>>| v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect();
    let nan64 = |v: Vec<Option<f64>>| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect();
    Ok(match elem {
        ElemType::Float32 => Column::F32(nan32(flat(raw).map_err(fail)?)),
        ElemType::Float64 => Column::F64(nan64(flat(raw).map_err(fail)?)),
        ElemType::Int64 => Column::I64(flat(raw).map_err(fail)?),
        ElemType::Int32 => Column::I32(flat(raw).map_err(fail)?),
        ElemType::Bool => Column::Bool(flat(raw).map_err(fail)?),
        ElemType::String => Column::Str(flat(raw).map_err(fail)?),
    })
}

/// The values of a tensor's data, row-major: flat (`[1, 2, 3, 4]`) or nested
/// (`[[1, 2], [3, 4]]`), as the protocol allows both.
fn flat<T: DeserializeOwned>(raw: &RawValue) -> Result<Vec<T>, serde_json::Error> {
    fn nested(s: &str) -> bool {
        s.strip_prefix('[')
            .is_some_and(|rest| rest.trim_start().starts_with('['))
    }
    fn walk<T: DeserializeOwned>(
        raw: &RawValue,
        out: &mut Vec<T>,
        depth: usize,
    ) -> Result<(), serde_json::Error> {
        let text = raw.get().trim_start();
        if nested(text) && depth < 32 {
            let inner: Vec<&RawValue> = serde_json::from_str(raw.get())?;
            for r in inner {
                walk(r, out, depth + 1)?;
            }
        } else if text.starts_with('[') {
            out.extend(serde_json::from_str::<Vec<T>>(raw.get())?);
        } else {
            out.push(serde_json::from_str::<T>(raw.get())?);
        }
        Ok(())
    }
    let text = raw.get().trim_start();
    if !nested(text) {
        return serde_json::from_str::<Vec<T>>(raw.get());
    }
    let mut out = Vec::new();
    walk(raw, &mut out, 0)?;
    Ok(out)
}

fn from_binary(
    name: &str,
    elem: ElemType,
    bytes: &[u8],
    count: usize,
) -> Result<Column, DecodeError> {
    let fixed = |width: usize| {
        if count.checked_mul(width) == Some(bytes.len()) {
            return Ok(bytes.chunks_exact(width));
        }
        Err(wrong(format!(
            "input \"{name}\": {count} {} values take {} bytes each, but binary_data_size is {}",
            datatype(elem),
            width,
            bytes.len()
        )))
    };
    let le4 = |c: &[u8]| <[u8; 4]>::try_from(c).unwrap_or_default();
    let le8 = |c: &[u8]| <[u8; 8]>::try_from(c).unwrap_or_default();
    Ok(match elem {
        ElemType::Float32 => Column::F32(fixed(4)?.map(|c| f32::from_le_bytes(le4(c))).collect()),
        ElemType::Int32 => Column::I32(fixed(4)?.map(|c| i32::from_le_bytes(le4(c))).collect()),
        ElemType::Float64 => Column::F64(fixed(8)?.map(|c| f64::from_le_bytes(le8(c))).collect()),
        ElemType::Int64 => Column::I64(fixed(8)?.map(|c| i64::from_le_bytes(le8(c))).collect()),
        ElemType::Bool => Column::Bool(
            fixed(1)?
                .enumerate()
                .map(|(i, b)| match b[0] {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(wrong(format!(
                        "input \"{name}\": BOOL element {i} is byte {other}; BOOL is 0 or 1"
                    ))),
                })
                .collect::<Result<_, _>>()?,
        ),
        ElemType::String => Column::Str(strings(name, bytes, count)?),
    })
}

/// BYTES elements: each a 4-byte little-endian length, then that many bytes of UTF-8.
fn strings(name: &str, mut bytes: &[u8], count: usize) -> Result<Vec<String>, DecodeError> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let i = out.len();
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(wrong(format!(
                "input \"{name}\": BYTES element {i} is cut short: {} bytes left where its 4-byte length belongs",
                bytes.len()
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(wrong(format!(
                "input \"{name}\": BYTES element {i} says {len} bytes, but only {} are left",
                rest.len()
            )));
        }
        let (text, rest) = rest.split_at(len);
        let text = std::str::from_utf8(text).map_err(|e| {
            wrong(format!(
                "input \"{name}\": BYTES element {i} is not UTF-8 text: {e}"
            ))
        })?;
        out.push(text.to_string());
        bytes = rest;
    }
    Ok(out)
}
