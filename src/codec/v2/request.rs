//! An inference request: its JSON object, then (binary tensor data extension) the bytes of
//! the inputs that give a `binary_data_size`, in the order the JSON lists them.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{datatype, DATATYPES};
use crate::codec::{number, Column, DecodeError, Frame};
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
    /// The outputs asked for by name, each with whether it goes back as binary data (None:
    /// as `binary_default` says); None: every output.
    pub outputs: Option<Vec<(String, Option<bool>)>>,
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

/// The JSON object of a request or response, parsed, and the binary data after it.
fn parse<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    header_len: Option<usize>,
) -> Result<(T, &'a [u8]), DecodeError> {
    let (json, binary) = match header_len {
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
    let parsed = serde_json::from_slice(json).map_err(|e| {
        match header_len
            .is_none()
            .then(|| bytes_after_json(json))
            .flatten()
        {
            // The usual mistake: binary data sent without saying where the JSON ends.
            Some(n) => bad(format!(
                "{n} bytes follow the JSON object: binary data needs the \
                 Inference-Header-Content-Length header (the JSON object's length)"
            )),
            None => bad(format!("invalid inference request: {e}")),
        }
    })?;
    Ok((parsed, binary))
}

/// Each tensor's binary data (None: its data is in the JSON), cut from `binary` in the order
/// the JSON lists the tensors; every byte must be accounted for.
fn cut<'a>(
    tensors: &[Input<'_>],
    mut binary: &'a [u8],
) -> Result<Vec<Option<&'a [u8]>>, DecodeError> {
    let mut pieces = Vec::with_capacity(tensors.len());
    for input in tensors {
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
                        short(&input.name)
                    ))
                    })?,
            ),
        };
        pieces.push(match size {
            None => None,
            Some(n) if n > binary.len() => {
                return Err(bad(format!(
                "input \"{}\": binary_data_size is {n}, but only {} bytes of binary data are left",
                short(&input.name),
                binary.len(),
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
    Ok(pieces)
}

/// How many bytes follow a complete JSON value at the start of `json`, when some do.
fn bytes_after_json(json: &[u8]) -> Option<usize> {
    let mut values =
        serde_json::Deserializer::from_slice(json).into_iter::<serde::de::IgnoredAny>();
    values.next()?.ok()?;
    let rest = &json[values.byte_offset()..];
    (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest.len())
}

/// A name from the request as a message repeats it: at most 64 characters.
fn short(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &name[..at]),
        None => name.to_string(),
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
    let (header, binary): (Header<'_>, _) = parse(body, header_len)?;
    let pieces = cut(&header.inputs, binary)?;
    let binary_default = flag(header.parameters.as_ref(), "binary_data_output", "request")?;
    // No outputs named, or an empty list: all of them.
    let outputs = header
        .outputs
        .filter(|asked| !asked.is_empty())
        .map(|asked| requested(asked, output_names))
        .transpose()?;

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
                "input \"{}\": shape {} is too large",
                spec.name,
                shape_text(&input.shape)
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

const CLASSIFICATION: &str = "the classification extension is not supported per request: ask \
     for the probabilities output, which holds every class's score (or, for a model with a \
     top_k step, its k best in the extension's format)";

fn requested(
    asked: Vec<Requested>,
    names: &[&str],
) -> Result<Vec<(String, Option<bool>)>, DecodeError> {
    let mut out: Vec<(String, Option<bool>)> = Vec::with_capacity(asked.len());
    for r in asked {
        if !names.contains(&r.name.as_str()) {
            return Err(wrong(format!(
                "unknown output \"{}\"; the model answers with: {}",
                short(&r.name),
                names.join(", ")
            )));
        }
        if out.iter().any(|(n, _)| *n == r.name) {
            return Err(bad(format!("output \"{}\" is asked for twice", r.name)));
        }
        let params = r.parameters.as_ref();
        if params.is_some_and(|p| p.contains_key("classification")) {
            return Err(wrong(CLASSIFICATION));
        }
        let binary = match params.and_then(|p| p.get("binary_data")) {
            None => None,
            Some(_) => Some(flag(
                params,
                "binary_data",
                &format!("output \"{}\"", r.name),
            )?),
        };
        out.push((r.name, binary));
    }
    Ok(out)
}

/// The model's inputs as a message lists them.
fn takes(sig: &ModelSignature) -> String {
    const SHOWN: usize = 12;
    let all = super::inputs(sig, None);
    let mut listed: Vec<String> = all
        .iter()
        .take(SHOWN)
        .map(|t| format!("{} ({} {:?})", t.name, t.datatype, t.shape))
        .collect();
    if all.len() > SHOWN {
        listed.push(format!(
            "... ({} inputs in all; GET the model's metadata)",
            all.len()
        ));
    }
    listed.join(", ")
}

/// A shape from the request as a message repeats it: its first dimensions only.
fn shape_text(shape: &[i64]) -> String {
    match shape.len() {
        0..=4 => format!("{shape:?}"),
        n => format!("{:?} ({n} dimensions)", &shape[..4]).replace(']', ", ...]"),
    }
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
            input.name,
            short(&input.datatype)
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
            "input \"{}\": shape {}, but the model takes {}",
            input.name,
            shape_text(&input.shape),
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
            "input \"{name}\": shape {} holds {count} values, but its data has {}",
            shape_text(&input.shape),
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
    // Floats are rounded once from the decimal text, as /invocations reads them (serde
    // would round to f64 first). JSON has no NaN: null is a missing value (XGBoost's NaN).
    let decimals = |parse: fn(&str) -> Option<f64>| -> Result<Vec<f64>, DecodeError> {
        flat::<Option<serde_json::Number>>(raw)
            .map_err(fail)?
            .into_iter()
            .enumerate()
            .map(|(i, n)| match n {
                None => Ok(f64::NAN),
                Some(n) => parse(n.as_str()).filter(|x| x.is_finite()).ok_or_else(|| {
                    bad(format!(
                        "input \"{name}\": element {i}, {n}, is not a finite {} value",
                        datatype(elem)
                    ))
                }),
            })
            .collect()
    };
    Ok(match elem {
        ElemType::Float32 => Column::F32(match fast_f32(raw.get()) {
            Some(v) => v,
            // Each f32 widened exactly to f64 and back: one rounding, from the decimal.
            None => decimals(|t| number::parse_f32(t).map(f64::from))?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        }),
        ElemType::Float64 => Column::F64(decimals(number::parse_f64)?),
        ElemType::Int64 => Column::I64(flat(raw).map_err(fail)?),
        ElemType::Int32 => Column::I32(flat(raw).map_err(fail)?),
        ElemType::Bool => Column::Bool(flat(raw).map_err(fail)?),
        ElemType::String => Column::Str(flat(raw).map_err(fail)?),
    })
}

/// A flat JSON list of plain numbers and nulls, read without serde (the common case, faster);
/// None when the list holds anything else, which `from_json` then reads through serde (and
/// words the error). `text` is JSON the request's parse has already checked, so each cell
/// here is a valid JSON number or null: the character check only tells numbers from the rest.
fn fast_f32(text: &str) -> Option<Vec<f32>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|cell| {
            let cell = cell.trim();
            if cell == "null" {
                return Some(f32::NAN);
            }
            let number = cell.starts_with(|c: char| c == '-' || c.is_ascii_digit())
                && cell
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
            number
                .then(|| number::parse_f32(cell))
                .flatten()
                .filter(|x| x.is_finite())
        })
        .collect()
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
        Err(bad(format!(
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
                    other => Err(bad(format!(
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
            return Err(bad(format!(
                "input \"{name}\": BYTES element {i} is cut short: {} bytes left where its 4-byte length belongs",
                bytes.len()
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad(format!(
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

/// A tensor of a request or response as text cells, read without a model: what `mlapp
/// monitor` takes from captured V2 requests and answers.
#[derive(Debug, PartialEq)]
pub struct TextTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    pub cells: Vec<String>,
}

/// A request's inputs; its `outputs` (names only) are not read.
#[derive(Deserialize)]
struct RequestTensors<'a> {
    #[serde(borrow, default)]
    inputs: Vec<Input<'a>>,
}

/// A response's outputs.
#[derive(Deserialize)]
struct ResponseTensors<'a> {
    #[serde(borrow, default)]
    outputs: Vec<Input<'a>>,
}

/// The inputs of a request, or (`answer`) the outputs of a response, as text. A float is
/// written as the shortest text that reads back as it; a missing value is an empty cell.
pub fn text_tensors(
    body: &[u8],
    header_len: Option<usize>,
    answer: bool,
) -> Result<Vec<TextTensor>, DecodeError> {
    let (tensors, binary) = match answer {
        true => parse::<ResponseTensors<'_>>(body, header_len).map(|(t, b)| (t.outputs, b))?,
        false => parse::<RequestTensors<'_>>(body, header_len).map(|(t, b)| (t.inputs, b))?,
    };
    let tensors = &tensors;
    let pieces = cut(tensors, binary)?;
    tensors
        .iter()
        .zip(pieces)
        .map(|(t, piece)| {
            let name = short(&t.name);
            let shape: Vec<usize> = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    wrong(format!(
                        "tensor \"{name}\": shape {} has a negative dimension",
                        shape_text(&t.shape)
                    ))
                })?;
            let count = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| {
                    wrong(format!(
                        "tensor \"{name}\": shape {} is too large",
                        shape_text(&t.shape)
                    ))
                })?;
            let cells = match (piece, t.data) {
                (Some(bytes), _) => {
                    let elem = DATATYPES_FED
                        .iter()
                        .find(|e| datatype(**e) == t.datatype)
                        .ok_or_else(|| {
                            wrong(format!(
                                "tensor \"{name}\": datatype {:?} is not read",
                                short(&t.datatype)
                            ))
                        })?;
                    text_cells(from_binary(&name, *elem, bytes, count)?)
                }
                (None, Some(raw)) => flat::<Value>(raw)
                    .map_err(|e| {
                        bad(format!(
                            "tensor \"{name}\": its data is not a JSON list: {e}"
                        ))
                    })?
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .collect(),
                (None, None) => return Err(bad(format!("tensor \"{name}\" has no data"))),
            };
            if cells.len() != count {
                return Err(wrong(format!(
                    "tensor \"{name}\": shape {} holds {count} values, but its data has {}",
                    shape_text(&t.shape),
                    cells.len()
                )));
            }
            Ok(TextTensor {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape,
                cells,
            })
        })
        .collect()
}

/// The element types mlapp feeds, whose binary data it reads.
const DATATYPES_FED: [ElemType; 6] = [
    ElemType::Float32,
    ElemType::Float64,
    ElemType::Int64,
    ElemType::Int32,
    ElemType::Bool,
    ElemType::String,
];

fn text_cells(c: Column) -> Vec<String> {
    fn float<T: std::fmt::Display + Copy>(v: Vec<T>, nan: impl Fn(T) -> bool) -> Vec<String> {
        v.into_iter()
            .map(|x| if nan(x) { String::new() } else { x.to_string() })
            .collect()
    }
    match c {
        Column::F32(v) => float(v, f32::is_nan),
        Column::F64(v) => float(v, f64::is_nan),
        Column::I64(v) => v.iter().map(i64::to_string).collect(),
        Column::I32(v) => v.iter().map(i32::to_string).collect(),
        Column::Bool(v) => v.iter().map(bool::to_string).collect(),
        Column::Str(v) => v,
    }
}
