//! Sample rows shipped with their expected answers (`mlapp package` puts them in
//! `parity/`): scored when the model loads, and a model that does not give them (a broken
//! export, another ONNX Runtime, a wrong step) is not served; `/ping` says which rows differ.
//!
//! The rows are `parity/rows.jsonl` (or `.json`, `.csv`), in a request format; the answers
//! `parity/expected.jsonl`, one line per row as `Accept: application/jsonlines` gives it
//! before a `top_k` or `fields` step: the model's values, not how the answer shows them.
//! Numbers may differ by 1e-5 relative (1e-6 absolute near zero): float32 sums differ in
//! the last place between batch sizes and CPUs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::unit::Unit;
use crate::codec::{self, OutputFormat};
use crate::model::{ModelError, ModelSignature, ModelSource, OutputPlan};

pub const DIR: &str = "parity";
pub const EXPECTED: &str = "expected.jsonl";
pub const ROWS: [&str; 3] = ["rows.jsonl", "rows.json", "rows.csv"];
const RELATIVE: f64 = 1e-5;
const ABSOLUTE: f64 = 1e-6;
/// Differences described in an error, of how many there are.
const SHOWN: usize = 5;
/// Row numbers listed in an error.
const LISTED: usize = 50;
/// The largest expected-answers file read.
const MAX_BYTES: u64 = 64 << 20;

/// The rows and expected answers in `dir`'s `parity/`, when it has them.
pub fn files(dir: &Path) -> Result<Option<(PathBuf, PathBuf)>, ModelError> {
    let parity = dir.join(DIR);
    let rows = ROWS.iter().map(|n| parity.join(n)).find(|p| p.is_file());
    let expected = parity.join(EXPECTED);
    match (rows, expected.is_file()) {
        (Some(r), true) => Ok(Some((r, expected))),
        (None, false) => Ok(None),
        (Some(_), false) => Err(ModelError::Parity(format!(
            "{} has sample rows but no {EXPECTED}",
            parity.display()
        ))),
        (None, true) => Err(ModelError::Parity(format!(
            "{} has {EXPECTED} but no rows.jsonl, rows.json or rows.csv",
            parity.display()
        ))),
    }
}

/// The answers `unit` gives for the rows in `path`, one JSON value per row.
pub fn answers(
    unit: &mut Unit,
    sig: &ModelSignature,
    plan: &OutputPlan,
    path: &Path,
    csv_header: bool,
) -> Result<Vec<Value>, ModelError> {
    let frame = super::warmup::read(path, sig, csv_header, "sample rows")?;
    let outputs = unit.run(frame).map_err(ModelError::Parity)?;
    // The model's values, not how they are shown: expected answers made in Python have every
    // class's probability, and a changed `fields` constant (a version) is not a changed model.
    let predictions = plan.apply(outputs).map_err(ModelError::Parity)?.plain();
    let body = codec::encode(&predictions, OutputFormat::JsonLines);
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|e| ModelError::Parity(e.to_string())))
        .collect()
}

/// The lines of an expected-answers file.
pub fn read_expected(path: &Path) -> Result<Vec<Value>, ModelError> {
    let fail = |e: String| ModelError::Parity(format!("{}: {e}", path.display()));
    let bytes = super::warmup::read_bounded(path, MAX_BYTES, "expected answers").map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|e| fail(e.to_string()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ModelError::Parity(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// What differs, row by row (0-based rows, as the file lists them).
pub fn differences(expected: &[Value], got: &[Value]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    if expected.len() != got.len() {
        out.push((
            expected.len().min(got.len()),
            format!("{} expected answers for {} rows", expected.len(), got.len()),
        ));
    }
    for (r, (e, g)) in expected.iter().zip(got).enumerate() {
        if let Some(d) = differ("", e, g) {
            out.push((r, d));
        }
    }
    out
}

fn differ(at: &str, e: &Value, g: &Value) -> Option<String> {
    let here = |what: String| {
        Some(if at.is_empty() {
            what
        } else {
            format!("{at}: {what}")
        })
    };
    match (e, g) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            let close = (a - b).abs() <= (RELATIVE * a.abs().max(b.abs())).max(ABSOLUTE);
            (!close)
                .then(|| format!("expected {a}, got {b}"))
                .and_then(here)
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match b.get(k) {
                    Some(w) => {
                        if let Some(d) = differ(&path, v, w) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}: missing")),
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .and_then(|k| here(format!("{k} was not expected")))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| differ(&format!("{at}[{i}]"), v, w)),
        (a, b) if a == b => None,
        (a, b) => here(format!("expected {a}, got {b}")),
    }
}

/// Scores the shipped sample rows on `unit` and compares; Some(rows) when they all match,
/// None when the model ships none.
pub fn check(
    unit: &mut Unit,
    source: &ModelSource,
    sig: &ModelSignature,
    plan: &OutputPlan,
) -> Result<Option<usize>, ModelError> {
    let Some((rows, expected)) = files(&source.dir)? else {
        return Ok(None);
    };
    let want = read_expected(&expected)?;
    let got = answers(unit, sig, plan, &rows, source.config.csv_header)?;
    let diffs = differences(&want, &got);
    if diffs.is_empty() {
        return Ok(Some(got.len()));
    }
    Err(ModelError::Parity(describe(&diffs, &rows)))
}

/// "rows 2, 7 of parity/rows.jsonl differ from parity/expected.jsonl: row 2: ...".
pub fn describe(diffs: &[(usize, String)], rows: &Path) -> String {
    let mut list: Vec<String> = diffs
        .iter()
        .take(LISTED)
        .map(|(r, _)| (r + 1).to_string())
        .collect();
    if diffs.len() > LISTED {
        list.push(format!("and {} more", diffs.len() - LISTED));
    }
    let shown: Vec<String> = diffs
        .iter()
        .take(SHOWN)
        .map(|(r, d)| format!("row {}: {d}", r + 1))
        .collect();
    format!(
        "the sample rows do not give their expected answers: {} {} of {} differ{} \
         (1-based; tolerance {RELATIVE} relative): {}",
        if list.len() == 1 { "row" } else { "rows" },
        list.join(", "),
        rows.display(),
        if list.len() == 1 { "s" } else { "" },
        shown.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_within_the_tolerance_match_and_others_are_named() {
        let e = [
            json!({"label": "male", "probabilities": {"female": 0.25, "male": 0.75}}),
            json!({"label": "male", "probabilities": {"female": 0.25, "male": 0.75}}),
            json!(3.5),
            json!({"label": 1}),
        ];
        let g = [
            json!({"label": "male", "probabilities": {"female": 0.2500001, "male": 0.75}}),
            json!({"label": "female", "probabilities": {"female": 0.25, "male": 0.75}}),
            json!(3.6),
            json!({"label": 1, "extra": true}),
        ];
        let d = differences(&e, &g);
        assert_eq!(
            d,
            [
                (1, "label: expected \"male\", got \"female\"".to_string()),
                (2, "expected 3.5, got 3.6".to_string()),
                (3, "extra was not expected".to_string()),
            ]
        );
        assert_eq!(
            differences(&e[..1], &g[..0]),
            [(0, "1 expected answers for 0 rows".to_string())]
        );
        assert_eq!(
            differ("", &json!({"p": [1.0, 2.0]}), &json!({"p": [1.0, 2.5]})),
            Some("p[1]: expected 2, got 2.5".into())
        );
    }
}
