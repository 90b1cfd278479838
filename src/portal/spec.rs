//! A job's definition, as `create` takes it: read strictly (an unknown or misspelt field is
//! an error naming it), checked field by field, and stored in one canonical text so that the
//! same definition sent again is recognised whatever its key order or whitespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::batch::BadRecords;
use crate::codec::{media, InputFormat, OutputFormat};
use crate::transform::SplitType;

/// What a job is: where its rows are, which model scores them, where the answers go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name and idempotency key: letters, digits and inner hyphens, up to 63.
    pub name: String,
    /// Any model URI `serve` takes: a folder, a file, a `model.tar.gz`, an `s3://` object or
    /// prefix. Its version is pinned when the job is created.
    pub model: String,
    /// A file or folder, or an `s3://` object or prefix.
    pub input: String,
    /// A folder or `s3://` prefix: input `x` gives `x.out`.
    pub output: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Default: CSV for CSV input, JSON Lines otherwise.
    #[serde(default)]
    pub accept: Option<String>,
    #[serde(default = "default_split")]
    pub split_type: Split,
    #[serde(default = "default_bad_records")]
    pub bad_records: Bad,
    /// 0-based CSV columns passed through, in front of each answer line, and not given to
    /// the model (SageMaker's `InputFilter` + `JoinSource` + `OutputFilter` in one field).
    #[serde(default)]
    pub id_columns: Vec<usize>,
    /// Files that may fail before the job fails (default 0: any failed file fails the job).
    #[serde(default)]
    pub max_failed_files: u64,
    /// Records that may get placeholders before the job fails (only with
    /// `bad_records: placeholder`; default: no limit).
    #[serde(default)]
    pub max_failed_records: Option<u64>,
    /// Times an item is started before it counts as failed (a replica died on it each time).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Free-form labels; `series` groups the runs that compare with each other.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A job name, or `previous-in-series`: the newest finished job with the same `series`.
    #[serde(default)]
    pub compare_to: Option<String>,
    /// Checks on the comparison; any that fails marks it failed.
    #[serde(default)]
    pub gates: Vec<Gate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Line,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bad {
    Fail,
    Placeholder,
}

/// A bound on one comparison metric (MLflow's `MetricThreshold` in spirit): the metric's
/// value must be within `[min, max]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// `label_share_linf`, `score_js_divergence`, `row_count_change` (relative, absolute
    /// value), or `label_share_change:<label>` (signed).
    pub metric: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

pub const COMPARE_PREVIOUS: &str = "previous-in-series";

/// Every field of a definition, for tests that mutate them.
pub const FIELDS: [&str; 15] = [
    "name",
    "model",
    "input",
    "output",
    "content_type",
    "accept",
    "split_type",
    "bad_records",
    "id_columns",
    "max_failed_files",
    "max_failed_records",
    "max_attempts",
    "labels",
    "compare_to",
    "gates",
];

fn default_content_type() -> String {
    "text/csv".into()
}
fn default_split() -> Split {
    Split::Line
}
fn default_bad_records() -> Bad {
    Bad::Fail
}
fn default_attempts() -> u32 {
    3
}

/// A field that is wrong, and why.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct Invalid {
    pub field: String,
    pub why: String,
}

pub fn invalid(field: &str, why: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        why: why.into(),
    }
}

/// What scoring needs from a spec, checked.
#[derive(Clone, Copy, Debug)]
pub struct Scoring {
    pub format: InputFormat,
    pub accept: OutputFormat,
    pub split: SplitType,
    pub bad_records: BadRecords,
}

impl JobSpec {
    /// Reads a definition; serde's message names the field and where it is.
    pub fn parse(body: &[u8]) -> Result<JobSpec, Invalid> {
        serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))
    }

    /// The one text stored and compared for replays.
    pub fn canonical(&self) -> String {
        // A struct of strings, numbers and maps always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks every field that can be checked without the store or the files.
    pub fn check(&self) -> Result<Scoring, Invalid> {
        check_name(&self.name)?;
        if self.model.trim().is_empty() {
            return Err(invalid(
                "model",
                "is empty: give a model URI (folder, file, model.tar.gz or s3://)",
            ));
        }
        if self.input.trim().is_empty() {
            return Err(invalid(
                "input",
                "is empty: give a file, folder or s3:// prefix",
            ));
        }
        if self.output.trim().is_empty() {
            return Err(invalid("output", "is empty: give a folder or s3:// prefix"));
        }
        let format = media::input_format(Some(&self.content_type), "text/csv", false, b"")
            .map_err(|e| invalid("content_type", e.to_string()))?;
        let accept = match &self.accept {
            Some(a) => media::parse_output(a)
                .ok_or_else(|| invalid("accept", format!("unsupported type {a:?}")))?,
            None => media::line_answer(format).unwrap_or(OutputFormat::JsonLines),
        };
        let split = match self.split_type {
            Split::Line => SplitType::Line,
            Split::None => SplitType::None,
        };
        if split == SplitType::Line {
            if !crate::stream::streamable(format) {
                return Err(invalid(
                    "content_type",
                    "split_type line takes CSV without a header or JSON Lines",
                ));
            }
            if accept == OutputFormat::Json {
                return Err(invalid(
                    "accept",
                    "split_type line answers one line per record: use text/csv or application/jsonlines",
                ));
            }
        }
        crate::transform::check_columns(&self.id_columns, format, split, accept)
            .map_err(|e| invalid("id_columns", e))?;
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(invalid(
                "max_attempts",
                format!("must be 1 to 100, got {}", self.max_attempts),
            ));
        }
        if self.max_failed_records.is_some() && self.bad_records == Bad::Fail {
            return Err(invalid(
                "max_failed_records",
                "counts placeholder records: set bad_records to placeholder (with fail, a bad record fails its file)",
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 63 || v.len() > 256 {
                return Err(invalid(
                    &format!("labels.{k}"),
                    "keys are 1 to 63 characters, values at most 256",
                ));
            }
        }
        if self.labels.len() > 64 {
            return Err(invalid("labels", "at most 64 labels"));
        }
        match self.compare_to.as_deref() {
            Some(COMPARE_PREVIOUS) if !self.labels.contains_key("series") => {
                return Err(invalid(
                    "compare_to",
                    "previous-in-series needs a `series` label to find the previous job",
                ))
            }
            Some(COMPARE_PREVIOUS) | None => {}
            Some(other) => check_name(other).map_err(|e| invalid("compare_to", e.why))?,
        }
        if !self.gates.is_empty() && self.compare_to.is_none() {
            return Err(invalid("gates", "gates check a comparison: set compare_to"));
        }
        for (i, g) in self.gates.iter().enumerate() {
            let field = format!("gates[{i}]");
            if !super::results::known_metric(&g.metric) {
                return Err(invalid(
                    &format!("{field}.metric"),
                    format!(
                        "unknown metric {:?}: use label_share_linf, score_js_divergence, row_count_change or label_share_change:<label>",
                        g.metric
                    ),
                ));
            }
            if g.min.is_none() && g.max.is_none() {
                return Err(invalid(&field, "give min, max or both"));
            }
            if g.min.iter().chain(g.max.iter()).any(|v| !v.is_finite()) {
                return Err(invalid(&field, "min and max must be finite numbers"));
            }
        }
        Ok(Scoring {
            format,
            accept,
            split,
            bad_records: match self.bad_records {
                Bad::Fail => BadRecords::Fail,
                Bad::Placeholder => BadRecords::Placeholder,
            },
        })
    }
}

/// SageMaker's job-name rule: `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "{:?} is not a job name: 1 to 63 letters, digits and inner hyphens",
                truncate(name, 80)
            ),
        ))
    }
}

/// At most `n` characters of `s`.
pub fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Result<JobSpec, Invalid> {
        let body = format!(
            r#"{{"name":"gender-2026-11","model":"m","input":"in","output":"out"{extra}}}"#
        );
        JobSpec::parse(body.as_bytes())
    }

    #[test]
    fn names_follow_sagemaker() {
        for ok in ["a", "gender-2026-11", "A--b", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a b", "é", &"x".repeat(64)] {
            assert_eq!(check_name(bad).unwrap_err().field, "name", "{bad}");
        }
    }

    #[test]
    fn unknown_and_wrong_fields_are_named() {
        let e = spec(r#","modle":"x""#).unwrap_err();
        assert!(e.why.contains("modle"), "{e}");
        let e = spec(r#","split_type":"lines""#).unwrap_err();
        assert!(e.why.contains("lines"), "{e}");
        let e = spec(r#","content_type":"image/png""#)
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.field, "content_type");
        let e = spec(r#","id_columns":[0],"accept":"application/jsonlines""#)
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.field, "id_columns");
        let e = spec(r#","gates":[{"metric":"label_share_linf","max":0.1}]"#)
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.field, "gates");
        let e = spec(r#","compare_to":"previous-in-series","gates":[{"metric":"nope","max":1}]"#)
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.field, "compare_to");
        let e = spec(r#","labels":{"series":"g"},"compare_to":"previous-in-series","gates":[{"metric":"nope","max":1}]"#)
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.field, "gates[0].metric");
    }

    #[test]
    fn fields_lists_every_field() {
        let spec = JobSpec::parse(br#"{"name":"j","model":"m","input":"i","output":"o"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&spec.canonical()).unwrap();
        let mut have: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut listed = FIELDS.to_vec();
        have.sort_unstable();
        listed.sort_unstable();
        assert_eq!(have, listed);
    }

    #[test]
    fn canonical_text_ignores_order_and_defaults() {
        let a = JobSpec::parse(br#"{"name":"j","model":"m","input":"i","output":"o"}"#).unwrap();
        let b = JobSpec::parse(
            br#"{ "output":"o", "input":"i", "model":"m", "name":"j", "content_type":"text/csv" }"#,
        )
        .unwrap();
        assert_eq!(a.canonical(), b.canonical());
        let c = JobSpec::parse(br#"{"name":"j","model":"m2","input":"i","output":"o"}"#).unwrap();
        assert_ne!(a.canonical(), c.canonical());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            prop_oneof![
                "text/csv",
                "application/jsonlines",
                "line",
                "none",
                "placeholder",
                "previous-in-series",
                "label_share_linf"
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The definition's fields and two that are not.
    fn keys() -> Vec<&'static str> {
        FIELDS.iter().copied().chain(["extra", "series"]).collect()
    }

    proptest! {
        /// Any JSON, with any of the spec's fields holding anything: an answer, never a panic,
        /// and a refusal names a field.
        #[test]
        fn any_definition_is_answered(fields in proptest::collection::vec((0..FIELDS.len() + 2, value()), 0..12)) {
            let mut m = serde_json::Map::new();
            m.insert("name".into(), "j".into());
            m.insert("model".into(), "m".into());
            m.insert("input".into(), "i".into());
            m.insert("output".into(), "o".into());
            for (k, v) in fields {
                m.insert(keys()[k].into(), v);
            }
            let body = serde_json::to_vec(&serde_json::Value::Object(m)).unwrap();
            match JobSpec::parse(&body) {
                Ok(spec) => {
                    if let Err(e) = spec.check() {
                        prop_assert!(!e.field.is_empty() && !e.why.is_empty());
                    }
                    // What is stored reads back as the same definition.
                    prop_assert_eq!(JobSpec::parse(spec.canonical().as_bytes()).unwrap(), spec);
                }
                Err(e) => prop_assert_eq!(e.field, "body"),
            }
        }

        #[test]
        fn any_bytes_are_answered(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = JobSpec::parse(&body).map(|s| s.check());
        }
    }
}
