//! Self-made functions around a model, declared in its config (`"steps"` in `mlapp.json`):
//! what is done to the rows before the graph runs (`before`) and to its answer after
//! (`after`). Steps are checked against the model's signature when it loads, and an error
//! names the step (`steps.before[2] (clip)`) and what is wrong with it.
//!
//! The `before` steps run in the engine with the batch they belong to (`engine::unit`), so every
//! entry point (`/invocations`, the Open Inference Protocol, transform, portal jobs, the
//! warm-up) scores through them alike. The `after` steps become part of the output plan.

pub mod after;
pub mod before;
pub mod expr;
pub mod wasm;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use after::After;
pub use before::Before;

/// `"steps"` in the model config.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    /// Run in order on the rows, before the model.
    #[serde(default, with = "tagged")]
    pub before: Vec<BeforeStep>,
    /// Run in order on the model's answer.
    #[serde(default, with = "tagged")]
    pub after: Vec<AfterStep>,
}

impl Steps {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }
}

/// Several graphs in one model folder, in place of `model_file`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Graphs {
    /// Graph files wired by name: each input of a graph is the output of that name of
    /// another graph, else it comes from the request. They run in the order the wiring
    /// needs; the one graph whose outputs no other reads gives the answer.
    Chain(Vec<String>),
    /// Graphs that take the same inputs, each run on every batch, their answers combined.
    Ensemble(Ensemble),
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ensemble {
    pub members: Vec<String>,
    /// One per member (default: equal); they need not sum to 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f64>,
    #[serde(default)]
    pub combine: Combine,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The weighted mean of the members' class probabilities (or of a regressor's values);
    /// the label is the most probable class.
    #[default]
    Mean,
    /// Each member votes its label with its weight; the probabilities are the shares of
    /// the votes.
    Vote,
}

impl Graphs {
    /// The graph files, as listed.
    pub fn files(&self) -> &[String] {
        match self {
            Graphs::Chain(files) => files,
            Graphs::Ensemble(e) => &e.members,
        }
    }

    /// What is wrong with the list itself, before any graph is opened.
    pub fn check(&self) -> Result<(), String> {
        let (what, files) = match self {
            Graphs::Chain(f) => ("chain", f),
            Graphs::Ensemble(e) => ("ensemble", &e.members),
        };
        if files.len() < 2 {
            return Err(format!(
                "graphs.{what} lists {} graph(s); it takes two or more (one graph is \"model_file\")",
                files.len()
            ));
        }
        if let Some(f) = files
            .iter()
            .enumerate()
            .find_map(|(i, f)| files[..i].contains(f).then_some(f))
        {
            return Err(format!("graphs.{what} lists {f:?} twice"));
        }
        if let Graphs::Ensemble(e) = self {
            if !e.weights.is_empty() && e.weights.len() != e.members.len() {
                return Err(format!(
                    "graphs.ensemble has {} weights for {} members",
                    e.weights.len(),
                    e.members.len()
                ));
            }
            if let Some(w) = e.weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
                return Err(format!(
                    "graphs.ensemble: a weight must be a number >= 0, got {w}"
                ));
            }
            if !e.weights.is_empty() && e.weights.iter().sum::<f64>() <= 0.0 {
                return Err("graphs.ensemble: the weights are all 0".into());
            }
        }
        Ok(())
    }
}

/// A step on the rows. Numeric steps take float features; a missing value (NaN) stays
/// missing through every numeric step but `fill_missing`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BeforeStep {
    /// A missing value (an empty cell, JSON null, NaN; an empty string for a text feature)
    /// becomes the value given for its feature: a number for a numeric feature, a string
    /// for a text one.
    FillMissing { values: BTreeMap<String, Value> },
    /// Values below `min` become `min`, above `max` become `max`.
    Clip {
        features: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// `ln(x + offset)`; a value at or below `-offset` becomes missing.
    Log {
        features: Vec<String>,
        #[serde(default)]
        offset: f64,
    },
    /// `(x - center) / scale`, as scikit-learn's StandardScaler with `center` = mean and
    /// `scale` = standard deviation.
    Scale {
        features: Vec<String>,
        #[serde(default)]
        center: f64,
        #[serde(default = "one")]
        scale: f64,
    },
    /// The index of the bucket `x` falls in: how many `boundaries` (increasing) are <= x.
    Bucketize {
        features: Vec<String>,
        boundaries: Vec<f64>,
    },
    /// Text features trimmed of surrounding white space and/or lower-cased.
    NormalizeText {
        features: Vec<String>,
        #[serde(default = "yes")]
        lowercase: bool,
        #[serde(default = "yes")]
        trim: bool,
    },
    /// A float feature the client does not send, computed from others (`expr`): it is left
    /// out of the request's columns, records and V2 tensors.
    Derive { feature: String, expression: String },
    /// A sandboxed function in WebAssembly (`pipeline::wasm` has its ABI): called once per
    /// batch with the listed float features of every row, which it rewrites.
    Wasm {
        /// The module, relative to the model folder (`.wasm`, or `.wat` text).
        module: String,
        features: Vec<String>,
        /// Instructions it may run per row of a batch (beside a fixed allowance).
        #[serde(default = "fuel_per_row")]
        fuel_per_row: u64,
        /// Memory it may grow to.
        #[serde(default = "memory_mb")]
        memory_mb: u64,
    },
}

fn fuel_per_row() -> u64 {
    100_000
}

fn memory_mb() -> u64 {
    64
}

/// A step on a classifier's or a regressor's answer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AfterStep {
    /// Classes renamed, from the model's names (or `0`, `1`, ... for integer labels) to
    /// those given; classes not named keep theirs.
    RenameLabels { labels: BTreeMap<String, String> },
    /// The label is the first class in this list whose probability reaches its threshold,
    /// else the most probable class.
    ClassThresholds { thresholds: Vec<ClassThreshold> },
    /// Probabilities (or a regressor's values) rounded to this many decimal places.
    Round { decimals: u32 },
    /// A classifier's answer lists only its `k` most probable classes, most probable first,
    /// in place of every class's probability.
    TopK { k: usize },
    /// Constant fields (strings, numbers, booleans) in every answer, such as the model's
    /// version; written in name order after the model's own.
    Fields { fields: BTreeMap<String, Value> },
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassThreshold {
    pub class: String,
    pub at_least: f32,
}

/// Steps are written `{"step": "clip", ...}`. Serde's internally tagged enums buffer their
/// fields, which loses numbers under serde_json's `arbitrary_precision` (on in this crate, so
/// decimals are rounded once): the tag is moved out here and each step read as an externally
/// tagged one (`{"clip": {...}}`), which reads numbers directly.
mod tagged {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Value};

    pub fn deserialize<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        let steps = Vec::<Value>::deserialize(d)?;
        steps
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let Value::Object(mut fields) = v else {
                    return Err(D::Error::custom(format!(
                        "step {i}: expected an object like {{\"step\": \"clip\", ...}}, got {v}"
                    )));
                };
                let kind = match fields.remove("step") {
                    Some(Value::String(k)) => k,
                    Some(other) => {
                        return Err(D::Error::custom(format!(
                            "step {i}: \"step\" must be a step's name, got {other}"
                        )))
                    }
                    None => {
                        return Err(D::Error::custom(format!(
                            "step {i}: it has no \"step\" naming what it does"
                        )))
                    }
                };
                let mut outer = Map::new();
                outer.insert(kind, Value::Object(fields));
                serde_json::from_value(Value::Object(outer))
                    .map_err(|e| D::Error::custom(format!("step {i}: {e}")))
            })
            .collect()
    }

    pub fn serialize<S: Serializer, T: Serialize>(steps: &[T], s: S) -> Result<S::Ok, S::Error> {
        let flat: Vec<Value> = steps
            .iter()
            .map(|t| flat(t).map_err(S::Error::custom))
            .collect::<Result<_, _>>()?;
        flat.serialize(s)
    }

    /// `{"clip": {...}}` as `{"step": "clip", ...}`.
    pub fn flat<T: Serialize>(t: &T) -> Result<Value, serde_json::Error> {
        Ok(match serde_json::to_value(t)? {
            Value::Object(outer) => match outer.into_iter().next() {
                Some((kind, Value::Object(fields))) => {
                    let mut m = Map::new();
                    m.insert("step".into(), Value::String(kind));
                    m.extend(fields);
                    Value::Object(m)
                }
                Some((kind, _)) => Value::String(kind),
                None => Value::Null,
            },
            other => other,
        })
    }
}

pub use tagged::flat as step_json;

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl BeforeStep {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::FillMissing { .. } => "fill_missing",
            Self::Clip { .. } => "clip",
            Self::Log { .. } => "log",
            Self::Scale { .. } => "scale",
            Self::Bucketize { .. } => "bucketize",
            Self::NormalizeText { .. } => "normalize_text",
            Self::Derive { .. } => "derive",
            Self::Wasm { .. } => "wasm",
        }
    }
}

impl AfterStep {
    /// Whether the step needs a classifier's classes (and so cannot follow a regressor).
    pub fn needs_classes(&self) -> bool {
        matches!(
            self,
            Self::RenameLabels { .. } | Self::ClassThresholds { .. } | Self::TopK { .. }
        )
    }

    /// Whether the step names classes, and so needs integer labels to be column numbers.
    pub fn names_classes(&self) -> bool {
        matches!(
            self,
            Self::RenameLabels { .. } | Self::ClassThresholds { .. }
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::RenameLabels { .. } => "rename_labels",
            Self::ClassThresholds { .. } => "class_thresholds",
            Self::Round { .. } => "round",
            Self::TopK { .. } => "top_k",
            Self::Fields { .. } => "fields",
        }
    }
}

/// A step that cannot run on this model, named by its place in the config.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("steps.{list}[{index}] ({kind}): {message}")]
pub struct StepError {
    pub list: &'static str,
    pub index: usize,
    pub kind: &'static str,
    pub message: String,
}

/// Rounds to `decimals` places, halves to even as Python's `round` and numpy's do.
pub fn round_to(x: f64, decimals: u32) -> f64 {
    let p = 10f64.powi(decimals.min(15) as i32);
    let scaled = x * p;
    if scaled.is_finite() {
        scaled.round_ties_even() / p
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_from_json_and_unknown_ones_are_refused() {
        let s: Steps = serde_json::from_str(
            r#"{"before": [{"step": "clip", "features": ["a"], "max": 3}],
                "after": [{"step": "round", "decimals": 2}]}"#,
        )
        .unwrap();
        assert_eq!(
            s.before,
            [BeforeStep::Clip {
                features: vec!["a".into()],
                min: None,
                max: Some(3.0)
            }]
        );
        let e = serde_json::from_str::<Steps>(r#"{"before": [{"step": "smooth"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `smooth`"), "{e}");
        let e = serde_json::from_str::<Steps>(
            r#"{"before": [{"step": "log", "features": ["a"], "base": 2}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `base`"), "{e}");
        let e = serde_json::from_str::<Steps>(r#"{"before": [{"step": "clip", "features": "a"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("step 0: invalid type"), "{e}");
        let e = serde_json::from_str::<Steps>(r#"{"after": [{"decimals": 2}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("step 0: it has no \"step\""), "{e}");
        // Written back as read.
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Steps>(&text).unwrap(), s);
        assert!(text.contains(r#""step":"clip""#), "{text}");
    }

    #[test]
    fn rounding_is_to_the_decimal_places() {
        assert_eq!(round_to(0.123456, 3), 0.123);
        assert_eq!(round_to(2.5, 0), 2.0);
        assert_eq!(round_to(3.5, 0), 4.0);
        assert_eq!(round_to(1e300, 2), 1e300);
        assert_eq!(round_to(-1.26, 1), -1.3);
    }
}
