//! `application/json` and `application/jsonlines` bodies.
//!
//! JSON forms: `{"instances": [[...], ...]}`, `{"instances": [{"feature": v, ...}, ...]}`,
//! `{"inputs": {"input_name": [...]}}`, a bare `[[...], ...]` or `[{...}, ...]`, a bare
//! `[...]` (one row) or a bare `{...}` (one record). JSON Lines: one array or object per line.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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
    if let Some(dup) = duplicate_key(body) {
        let is_record = |v: &Value| {
            v.as_object()
                .is_some_and(|o| !o.contains_key("instances") && !o.contains_key("inputs"))
        };
        let row = match dup.path.as_slice() {
            [] if is_record(&value) => Some(1),
            [Seg::Key(k), Seg::Index(i)] if k == "instances" || k == "inputs" => Some(i + 1),
            [Seg::Index(i)] => Some(i + 1),
            _ => None,
        };
        return Err(dup.error(row));
    }
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
        if let Some(dup) = duplicate_key(line) {
            let in_record = dup.path.is_empty() && value.is_object();
            return Err(dup.error(Some(row).filter(|_| in_record)));
        }
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

/// A step into a JSON value: an object's key or an array's index.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The first key that appears twice in one object, and the path to that object.
struct Duplicate {
    path: Vec<Seg>,
    key: String,
}

impl Duplicate {
    /// The error for a duplicate in a record at `row`, or anywhere else (`None`).
    fn error(self, row: Option<usize>) -> DecodeError {
        let place = if row.is_some() || self.path.is_empty() {
            String::new()
        } else {
            let path: String = self
                .path
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => format!("{k:?}"),
                    Seg::Index(i) => format!("[{i}]"),
                })
                .collect();
            format!(" in {path}")
        };
        DecodeError::DuplicateKey {
            row,
            key: self.key,
            place,
        }
    }
}

/// Looks for a key given twice in one object. `serde_json::Value` keeps the last value of a
/// repeated key silently, so a well-formed body is read once more, as tokens, to find one.
fn duplicate_key(body: &[u8]) -> Option<Duplicate> {
    let mut path = Vec::new();
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Scan {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

struct Scan<'a> {
    path: &'a mut Vec<Seg>,
    found: &'a mut Option<Duplicate>,
}

impl Scan<'_> {
    fn child(&mut self) -> Scan<'_> {
        Scan {
            path: self.path,
            found: self.found,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        for i in 0.. {
            self.path.push(Seg::Index(i));
            let more = seq.next_element_seed(self.child())?;
            self.path.pop();
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Numbers arrive here too, as serde_json's one-key arbitrary-precision map; one key is
    /// never a duplicate.
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                *self.found = Some(Duplicate {
                    path: self.path.clone(),
                    key,
                });
                return Err(de::Error::custom("duplicate key"));
            }
            self.path.push(Seg::Key(key.clone()));
            map.next_value_seed(self.child())?;
            self.path.pop();
            seen.insert(key);
        }
        Ok(())
    }
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

    fn city(frame: Frame) -> String {
        match &frame.columns[0] {
            Column::Str(v) => v[0].clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nul_in_a_string_feature_is_an_invalid_value() {
        // Review M7: a NUL reached ONNX Runtime, which cannot make a C string of it (500).
        for body in [
            r#"[["La\u0000gos", 1, 2]]"#,
            r#"{"instances": [["Lagos", 1, 2], {"city": "\u0000", "tier": 1, "hours": 2}]}"#,
            r#"{"inputs": {"city": ["x", "\u0000"], "tier": [1, 2], "hours": [1, 2]}}"#,
        ] {
            let err = decode(body.as_bytes(), &mixed()).unwrap_err();
            assert_eq!(err.code(), "invalid_value", "{body}: {err}");
            assert!(!err.is_malformed());
            assert!(
                err.to_string()
                    .contains("(feature \"city\"): expected a string without NUL"),
                "{err}"
            );
        }
        let err = decode_lines(b"[\"x\", 1, 2]\n[\"\\u0000\", 1, 2]\n", &mixed()).unwrap_err();
        assert!(err.to_string().starts_with("row 2, column 1"), "{err}");
    }

    #[test]
    fn a_json_number_for_a_string_feature_keeps_its_text() {
        // Review L9: 1.0 went through a double and came out "1"; Python's str(1.0) is "1.0",
        // which is what a category exported from a float column holds.
        for (body, want) in [
            ("[[1.0, 3, 1.5]]", "1.0"),
            (
                r#"{"instances": [{"city": 2.50, "tier": 3, "hours": 1.5}]}"#,
                "2.50",
            ),
            (
                r#"{"inputs": {"city": [10.250], "tier": [3], "hours": [1.5]}}"#,
                "10.250",
            ),
            (r#"{"city": -0.0, "tier": 3, "hours": 1.5}"#, "-0.0"),
            ("[[7, 3, 1.5]]", "7"),
        ] {
            assert_eq!(
                city(decode(body.as_bytes(), &mixed()).unwrap()),
                want,
                "{body}"
            );
            let tree = decode_tree(body.as_bytes(), &mixed()).unwrap();
            assert_eq!(city(tree), want, "{body}");
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_with_its_name() {
        // Review L9: the tree kept the last value silently. The first body is a fast-path
        // shape; the fast path gives up on it and the tree path must report.
        let cases: [(&str, &str); 5] = [
            (
                r#"{"instances": [{"a":1,"b":2,"c":3}, {"a":1,"b":2,"a":9,"c":3}]}"#,
                "row 2: key \"a\" appears twice",
            ),
            (
                r#"{"a":1,"b":2,"c":3,"c":3}"#,
                "row 1: key \"c\" appears twice",
            ),
            (
                r#"[{"a":1,"b":2,"c":3,"z":1,"z":1}]"#,
                "row 1: key \"z\" appears twice",
            ),
            (
                r#"{"inputs": {"input": [[1,2,3]], "input": [[4,5,6]]}}"#,
                "key \"input\" appears twice in \"inputs\"",
            ),
            (
                r#"{"instances": [[1,2,3]], "instances": [[4,5,6]]}"#,
                "key \"instances\" appears twice",
            ),
        ];
        for (body, message) in cases {
            let err = decode(body.as_bytes(), &tensor3()).unwrap_err();
            assert!(!err.is_malformed(), "{body}");
            assert_eq!(err.code(), "duplicate_key", "{body}");
            assert_eq!(err.to_string(), message, "{body}");
        }
        let body = b"[1,2,3]\n\n{\"a\":1,\"b\":2,\"a\":1,\"c\":3}\n";
        let err = decode_lines(body, &tensor3()).unwrap_err();
        assert_eq!(err.to_string(), "row 2: key \"a\" appears twice");
        // The same key in different records, or in a nested value, is not a duplicate.
        decode(br#"[{"a":1,"b":2,"c":3},{"a":1,"b":2,"c":3}]"#, &tensor3()).unwrap();
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
