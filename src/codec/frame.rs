//! The decoded request: one typed, row-major buffer per model input, filled cell by cell.
//!
//! Decoders push cells in feature order for each row, so every input's buffer is appended to
//! in exactly the layout ONNX Runtime reads (`[rows, width]`), with no per-row allocation.

use serde_json::Value;

use super::{number, DecodeError};
use crate::model::{ElemType, ModelSignature};

#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Column {
    fn with_capacity(elem: ElemType, n: usize) -> Self {
        match elem {
            ElemType::Float32 => Self::F32(Vec::with_capacity(n)),
            ElemType::Float64 => Self::F64(Vec::with_capacity(n)),
            ElemType::Int64 => Self::I64(Vec::with_capacity(n)),
            ElemType::Int32 => Self::I32(Vec::with_capacity(n)),
            ElemType::Bool => Self::Bool(Vec::with_capacity(n)),
            ElemType::String => Self::Str(Vec::with_capacity(n)),
        }
    }

    pub fn elem(&self) -> ElemType {
        match self {
            Self::F32(_) => ElemType::Float32,
            Self::F64(_) => ElemType::Float64,
            Self::I64(_) => ElemType::Int64,
            Self::I32(_) => ElemType::Int32,
            Self::Bool(_) => ElemType::Bool,
            Self::Str(_) => ElemType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows ready for the model: `columns[i]` feeds input `i`.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub rows: usize,
    pub columns: Vec<Column>,
}

impl Frame {
    /// Rows of synthetic values, for the warm-up run that must pass before `/ping` says ready.
    pub fn synthetic(sig: &ModelSignature, rows: usize) -> Frame {
        let mut b = FrameBuilder::new(sig, rows);
        for r in 0..rows {
            for (f, feature) in sig.features.iter().enumerate() {
                let k = (r * 31 + f * 17) % 97;
                let cell = match feature.elem {
                    ElemType::String => Cell::Text("warmup"),
                    ElemType::Float32 | ElemType::Float64 => Cell::Num(k as f64 / 97.0),
                    ElemType::Int64 | ElemType::Int32 => Cell::Int(k as i64 % 4),
                    ElemType::Bool => Cell::Bool(k % 2 == 0),
                };
                // Each cell is built to fit its feature's type, so this push cannot fail.
                let _ = b.push(r + 1, f + 1, f, cell);
            }
            b.end_row();
        }
        b.finish()
    }
}

/// A cell as a decoder found it, before it is converted to the feature's type.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    Text(&'a str),
    Num(f64),
    Int(i64),
    Bool(bool),
    /// A JSON number as written, so that a float feature is rounded once from the decimal.
    Decimal(&'a str),
    /// JSON null or an empty CSV cell: NaN for float features (XGBoost's missing value).
    Missing,
    /// A JSON array or object where a single value belongs.
    Nested(&'static str),
}

pub struct FrameBuilder<'s> {
    sig: &'s ModelSignature,
    columns: Vec<Column>,
    rows: usize,
}

impl<'s> FrameBuilder<'s> {
    pub fn new(sig: &'s ModelSignature, rows_hint: usize) -> Self {
        let columns = sig
            .inputs
            .iter()
            .map(|i| Column::with_capacity(i.elem, rows_hint.saturating_mul(i.width).min(1 << 24)))
            .collect();
        Self {
            sig,
            columns,
            rows: 0,
        }
    }

    pub fn signature(&self) -> &'s ModelSignature {
        self.sig
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one cell of feature `feature`. `row` and `column` are 1-based and only used
    /// to say where a bad value was.
    pub fn push(
        &mut self,
        row: usize,
        column: usize,
        feature: usize,
        cell: Cell<'_>,
    ) -> Result<(), DecodeError> {
        let f = &self.sig.features[feature];
        let bad = |got: String| DecodeError::Value {
            row,
            column,
            feature: f.name.clone(),
            expected: expected(f.elem),
            got,
        };
        if let Cell::Nested(kind) = cell {
            return Err(bad(kind.to_string()));
        }
        // Float features round the decimal once; string features keep it as written (1.0 stays
        // "1.0", as Python's str gives it); the rest read it as an integer or a double.
        let keeps_decimal = matches!(
            self.columns[f.input],
            Column::F32(_) | Column::F64(_) | Column::Str(_)
        );
        let cell = match cell {
            Cell::Decimal(t) if !keeps_decimal => number_cell(t),
            other => other,
        };
        match &mut self.columns[f.input] {
            Column::F32(v) => v.push(match cell {
                Cell::Decimal(t) => number::parse_f32(t).ok_or_else(|| bad(t.to_string()))?,
                Cell::Num(x) => x as f32,
                Cell::Int(x) => x as f32,
                Cell::Missing => f32::NAN,
                Cell::Text(t) => parse_float::<f32>(t).ok_or_else(|| bad(quote(t)))?,
                other => return Err(bad(describe(other))),
            }),
            Column::F64(v) => v.push(match cell {
                Cell::Decimal(t) => number::parse_f64(t).ok_or_else(|| bad(t.to_string()))?,
                Cell::Num(x) => x,
                Cell::Int(x) => x as f64,
                Cell::Missing => f64::NAN,
                Cell::Text(t) => parse_float::<f64>(t).ok_or_else(|| bad(quote(t)))?,
                other => return Err(bad(describe(other))),
            }),
            Column::I64(v) => v.push(to_int(cell).map_err(bad)?),
            Column::I32(v) => {
                let x = to_int(cell).map_err(bad)?;
                v.push(i32::try_from(x).map_err(|_| bad(x.to_string()))?)
            }
            Column::Bool(v) => v.push(match cell {
                Cell::Bool(b) => b,
                Cell::Int(0) => false,
                Cell::Int(1) => true,
                Cell::Num(x) if x == 0.0 || x == 1.0 => x == 1.0,
                Cell::Text(t) => parse_bool(t).ok_or_else(|| bad(quote(t)))?,
                other => return Err(bad(describe(other))),
            }),
            Column::Str(v) => {
                let text = match cell {
                    Cell::Text(t) => t.to_owned(),
                    Cell::Int(x) => x.to_string(),
                    Cell::Num(x) => x.to_string(),
                    Cell::Bool(b) => b.to_string(),
                    Cell::Decimal(t) => t.to_owned(),
                    Cell::Missing | Cell::Nested(_) => String::new(),
                };
                // ONNX Runtime copies each string into a C string, which cannot hold a NUL: it
                // would fail the whole run (a 500, and a coalesced batch rerun one by one).
                if text.contains('\0') {
                    return Err(DecodeError::Value {
                        row,
                        column,
                        feature: f.name.clone(),
                        expected: "a string without NUL characters",
                        got: quote(&text),
                    });
                }
                v.push(text)
            }
        }
        Ok(())
    }

    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    pub fn finish(self) -> Frame {
        Frame {
            rows: self.rows,
            columns: self.columns,
        }
    }
}

fn expected(elem: ElemType) -> &'static str {
    match elem {
        ElemType::Float32 => "a number (float32)",
        ElemType::Float64 => "a number (float64)",
        ElemType::Int64 => "an integer (int64)",
        ElemType::Int32 => "an integer (int32)",
        ElemType::Bool => "a boolean",
        ElemType::String => "a string",
    }
}

fn quote(t: &str) -> String {
    const MAX: usize = 40;
    match t.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &t[..cut]),
        None => format!("{t:?}"),
    }
}

fn describe(cell: Cell<'_>) -> String {
    match cell {
        Cell::Text(t) => quote(t),
        Cell::Decimal(t) => t.to_string(),
        Cell::Num(x) => x.to_string(),
        Cell::Int(x) => x.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Missing => "nothing".into(),
        Cell::Nested(kind) => kind.into(),
    }
}

/// A JSON number for a non-float feature: the integer it is, or else the double.
fn number_cell(text: &str) -> Cell<'_> {
    match text.parse::<i64>() {
        Ok(i) => Cell::Int(i),
        Err(_) => Cell::Num(number::parse_f64(text).unwrap_or(f64::NAN)),
    }
}

fn parse_float<T: Float>(t: &str) -> Option<T> {
    let t = t.trim();
    if t.is_empty() {
        return Some(T::MISSING);
    }
    T::parse(t)
}

trait Float: Sized {
    const MISSING: Self;
    fn parse(text: &str) -> Option<Self>;
}
impl Float for f32 {
    const MISSING: Self = f32::NAN;
    fn parse(text: &str) -> Option<Self> {
        number::parse_f32(text)
    }
}
impl Float for f64 {
    const MISSING: Self = f64::NAN;
    fn parse(text: &str) -> Option<Self> {
        number::parse_f64(text)
    }
}

fn to_int(cell: Cell<'_>) -> Result<i64, String> {
    match cell {
        Cell::Int(x) => Ok(x),
        // 3.0 is an integer written by a float formatter (pandas does this); 3.5 is not.
        Cell::Num(x) if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 => Ok(x as i64),
        Cell::Text(t) => {
            let t = t.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|x| x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15)
                        .map(|x| x as i64)
                })
                .ok_or_else(|| quote(t))
        }
        other => Err(describe(other)),
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Reads a JSON value as a cell.
pub fn json_cell(v: &Value) -> Cell<'_> {
    match v {
        Value::Null => Cell::Missing,
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => Cell::Decimal(n.as_str()),
        Value::String(s) => Cell::Text(s),
        // Arrays and objects are never a feature value; describe them in the error.
        Value::Array(_) => Cell::Nested("an array"),
        Value::Object(_) => Cell::Nested("an object"),
    }
}
