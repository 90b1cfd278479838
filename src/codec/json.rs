//! `application/json` and `application/jsonlines` bodies.
//!
//! JSON forms: `{"instances": [[...], ...]}`, `{"instances": [{"feature": v, ...}, ...]}`,
//! `{"inputs": {"input_name": [...]}}`, a bare `[[...], ...]` or `[{...}, ...]`, a bare
//! `[...]` (one row) or a bare `{...}` (one record). JSON Lines: one array or object per line.

use serde_json::{Map, Value};

use super::frame::{json_cell, FrameBuilder};
use super::{json_fast, DecodeError, Frame};
use crate::model::ModelSignature;

pub fn decode(body: &[u8], sig: &ModelSignature) -> Result<Frame, DecodeError> {
    match json_fast::decode(body, sig) {
        Some(frame) => Ok(frame),
        None => decode_tree(body, sig),
    }
}

pub fn decode_lines(body: &[u8], sig: &ModelSignature) -> Result<Frame, DecodeError> {
    match json_fast::decode_lines(body, sig) {
        Some(frame) => Ok(frame),
        None => decode_lines_tree(body, sig),
    }
}

/// Every JSON form, through a `serde_json::Value` tree, with errors that say where.
pub(crate) fn decode_tree(body: &[u8], sig: &ModelSignature) -> Result<Frame, DecodeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::syntax("json", format!("invalid JSON: {e}")))?;
    match value {
        Value::Object(mut obj) => {
            if let Some(instances) = obj.remove("instances") {
                let Value::Array(items) = instances else {
                    return Err(DecodeError::syntax(
                        "json",
                        "\"instances\" must be an array of rows or records",
                    ));
                };
                rows(&items, sig)
            } else if let Some(inputs) = obj.remove("inputs") {
                match inputs {
                    Value::Object(named) => named_inputs(&named, sig),
                    Value::Array(items) => rows(&items, sig),
                    _ => Err(DecodeError::syntax(
                        "json",
                        "\"inputs\" must map input names to arrays",
                    )),
                }
            } else {
                let mut b = FrameBuilder::new(sig, 1);
                record(&mut b, 1, &obj)?;
                b.end_row();
                Ok(b.finish())
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            let mut b = FrameBuilder::new(sig, 1);
            positional(&mut b, 1, &items)?;
            b.end_row();
            Ok(b.finish())
        }
        Value::Array(items) => rows(&items, sig),
        _ => Err(DecodeError::syntax(
            "json",
            "expected an object with \"instances\" or \"inputs\", or an array of rows",
        )),
    }
}

pub(crate) fn decode_lines_tree(body: &[u8], sig: &ModelSignature) -> Result<Frame, DecodeError> {
    let mut b = FrameBuilder::new(sig, body.len() / (sig.features.len() * 4).max(1));
    for (i, line) in body.split(|&c| c == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| {
            DecodeError::syntax("jsonlines", format!("line {}: invalid JSON: {e}", i + 1))
        })?;
        let row = b.rows() + 1;
        one_row(&mut b, row, &value)?;
        b.end_row();
    }
    Ok(b.finish())
}

fn rows(items: &[Value], sig: &ModelSignature) -> Result<Frame, DecodeError> {
    let mut b = FrameBuilder::new(sig, items.len());
    for (i, item) in items.iter().enumerate() {
        one_row(&mut b, i + 1, item)?;
        b.end_row();
    }
    Ok(b.finish())
}

fn one_row(b: &mut FrameBuilder<'_>, row: usize, item: &Value) -> Result<(), DecodeError> {
    match item {
        Value::Array(cells) => positional(b, row, cells),
        Value::Object(obj) => record(b, row, obj),
        // A bare value is a row of a one-feature model.
        scalar => positional(b, row, std::slice::from_ref(scalar)),
    }
}

fn positional(b: &mut FrameBuilder<'_>, row: usize, cells: &[Value]) -> Result<(), DecodeError> {
    let sig = b.signature();
    if cells.len() != sig.features.len() {
        return Err(DecodeError::FeatureCount {
            row,
            expected: sig.features.len(),
            got: cells.len(),
            features: sig.feature_list(),
        });
    }
    for (f, v) in cells.iter().enumerate() {
        b.push(row, f + 1, f, json_cell(v))?;
    }
    Ok(())
}

fn record(
    b: &mut FrameBuilder<'_>,
    row: usize,
    obj: &Map<String, Value>,
) -> Result<(), DecodeError> {
    let sig = b.signature();
    let mut slots: Vec<Option<&Value>> = vec![None; sig.features.len()];
    for (name, v) in obj {
        let f = sig
            .feature_index(name)
            .ok_or_else(|| DecodeError::UnknownFeature {
                row,
                name: name.clone(),
                features: sig.feature_list(),
            })?;
        slots[f] = Some(v);
    }
    for (f, slot) in slots.iter().enumerate() {
        let v = slot.ok_or_else(|| DecodeError::MissingFeature {
            row,
            feature: sig.features[f].name.clone(),
        })?;
        b.push(row, f + 1, f, json_cell(v))?;
    }
    Ok(())
}

/// `{"inputs": {"name": [...]}}`: whole tensors by input name, each `[rows]`, `[rows, 1]`
/// or `[rows, width]`.
fn named_inputs(named: &Map<String, Value>, sig: &ModelSignature) -> Result<Frame, DecodeError> {
    if let Some(unknown) = named
        .keys()
        .find(|k| !sig.inputs.iter().any(|i| &i.name == *k))
    {
        return Err(DecodeError::Shape(format!(
            "unknown input \"{unknown}\"; the model's inputs are {}",
            input_names(sig)
        )));
    }
    // tensors[i][r] is row r of input i, as a slice of `width` values.
    let mut tensors: Vec<Vec<&[Value]>> = Vec::with_capacity(sig.inputs.len());
    let mut nrows: Option<usize> = None;
    for input in &sig.inputs {
        let v = named.get(&input.name).ok_or_else(|| {
            DecodeError::Shape(format!(
                "missing input \"{}\"; the model's inputs are {}",
                input.name,
                input_names(sig)
            ))
        })?;
        let Value::Array(items) = v else {
            return Err(DecodeError::Shape(format!(
                "input \"{}\" must be an array",
                input.name
            )));
        };
        let flat_row = input.width > 1 && items.iter().all(|x| !x.is_array());
        let rows: Vec<&[Value]> = if flat_row {
            vec![items.as_slice()]
        } else {
            items
                .iter()
                .map(|x| match x {
                    Value::Array(inner) => inner.as_slice(),
                    scalar => std::slice::from_ref(scalar),
                })
                .collect()
        };
        for (r, cells) in rows.iter().enumerate() {
            if cells.len() != input.width {
                return Err(DecodeError::Shape(format!(
                    "input \"{}\", row {}: expected {} values, got {}",
                    input.name,
                    r + 1,
                    input.width,
                    cells.len()
                )));
            }
        }
        match nrows {
            Some(n) if n != rows.len() => {
                return Err(DecodeError::Shape(format!(
                    "input \"{}\" has {} rows but \"{}\" has {n}",
                    input.name,
                    rows.len(),
                    sig.inputs[0].name
                )))
            }
            _ => nrows = Some(rows.len()),
        }
        tensors.push(rows);
    }
    let nrows = nrows.unwrap_or(0);
    let mut b = FrameBuilder::new(sig, nrows);
    // Feature f is column (f - first feature of its input) of that input.
    let mut first = vec![0usize; sig.inputs.len()];
    for (f, feat) in sig.features.iter().enumerate().rev() {
        first[feat.input] = f;
    }
    for r in 0..nrows {
        for (f, feat) in sig.features.iter().enumerate() {
            let Some(v) = tensors[feat.input]
                .get(r)
                .and_then(|row| row.get(f - first[feat.input]))
            else {
                return Err(DecodeError::Shape(format!(
                    "input \"{}\" is shorter than the others",
                    sig.inputs[feat.input].name
                )));
            };
            b.push(r + 1, f + 1, f, json_cell(v))?;
        }
        b.end_row();
    }
    Ok(b.finish())
}

fn input_names(sig: &ModelSignature) -> String {
    sig.inputs
        .iter()
        .map(|i| format!("\"{}\"", i.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_sig::{mixed, tensor3};
    use crate::codec::Column;

    fn f32s(body: &str) -> Vec<f32> {
        match decode(body.as_bytes(), &tensor3())
            .unwrap()
            .columns
            .remove(0)
        {
            Column::F32(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_json_form_gives_the_same_rows() {
        let want = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(f32s(r#"{"instances": [[1,2,3],[4,5,6]]}"#), want);
        assert_eq!(
            f32s(r#"{"instances": [{"c":3,"b":2,"a":1},{"a":4,"b":5,"c":6}]}"#),
            want
        );
        assert_eq!(f32s(r#"{"inputs": {"input": [[1,2,3],[4,5,6]]}}"#), want);
        assert_eq!(f32s("[[1,2,3],[4,5,6]]"), want);
        assert_eq!(f32s("[1,2,3]"), vec![1.0, 2.0, 3.0]);
        assert_eq!(f32s(r#"{"a":1,"b":2,"c":3}"#), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn records_name_missing_and_unknown_features() {
        let err = decode(br#"{"instances": [{"a":1,"b":2}]}"#, &tensor3()).unwrap_err();
        assert_eq!(err.to_string(), "row 1: missing feature \"c\"");
        let err = decode(br#"[{"a":1,"b":2,"c":3,"d":4}]"#, &tensor3()).unwrap_err();
        assert!(
            err.to_string().starts_with("row 1: unknown feature \"d\""),
            "{err}"
        );
    }

    #[test]
    fn named_inputs_for_a_pipeline() {
        let body =
            r#"{"inputs": {"city": ["Lagos", "Berlin"], "tier": [[1],[2]], "hours": [0.5, 1.5]}}"#;
        let f = decode(body.as_bytes(), &mixed()).unwrap();
        assert_eq!(f.rows, 2);
        assert_eq!(
            f.columns[0],
            Column::Str(vec!["Lagos".into(), "Berlin".into()])
        );
        assert_eq!(f.columns[1], Column::I64(vec![1, 2]));
        let err = decode(br#"{"inputs": {"city": ["x"], "tier": [1]}}"#, &mixed()).unwrap_err();
        assert!(err.to_string().contains("missing input \"hours\""), "{err}");
    }

    #[test]
    fn syntax_errors_are_malformed() {
        let err = decode(b"{\"instances\": [[1,2,3]", &tensor3()).unwrap_err();
        assert!(err.is_malformed());
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = decode(br#"{"instances": [[1,[2],3]]}"#, &tensor3()).unwrap_err();
        assert!(!err.is_malformed());
        assert!(err.to_string().contains("got an array"), "{err}");
    }

    #[test]
    fn json_lines_rows_and_records() {
        let body = b"[1,2,3]\r\n{\"a\":4,\"b\":5,\"c\":6}\n\n";
        let f = decode_lines(body, &tensor3()).unwrap();
        assert_eq!(
            f.columns[0],
            Column::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let err = decode_lines(b"[1,2,3]\n[1,2\n", &tensor3()).unwrap_err();
        assert!(err.to_string().starts_with("line 2: invalid JSON"), "{err}");
    }
}
