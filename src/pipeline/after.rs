//! The `after` steps: run in order on a classifier's labels, classes and probabilities, or on
//! a regressor's values, as the last part of the output plan. Class names are only known once
//! the graph has run (ZipMap's keys, the label tensor), so a step naming a class that is not
//! there fails the warm-up, and with it the load, before any request.
//!
//! `top_k` and `fields` change how the answer is written, not its values: they become a
//! [`Shown`] that the encoders read, so monitoring, shadows and job results still see every
//! class's probability.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{round_to, AfterStep, StepError};
use crate::codec::encode::csv_str;
use crate::model::Label;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct After {
    steps: Vec<AfterStep>,
    /// None when no step changes how the answer is written: the encoders' usual path.
    #[serde(skip)]
    shown: Option<Arc<Shown>>,
}

/// What the `top_k` and `fields` steps add to how every answer is written.
#[derive(Debug, Default, PartialEq)]
pub struct Shown {
    /// Only the k most probable classes, most probable first.
    pub top_k: Option<usize>,
    /// Name and value, in name order: strings, numbers and booleans (also a V2 answer's
    /// `parameters`, as they are).
    pub fields: Map<String, Value>,
    /// The fields as they follow a JSON entry's own members: `,"name":value...`.
    pub json: Vec<u8>,
    /// The fields as they follow a CSV line's own values: `,value...`.
    pub csv: Vec<u8>,
}

/// The most classes a `top_k` step may list.
const MAX_K: usize = 65_536;

/// Names an answer's entry already uses, which a constant field may not take.
const TAKEN: [&str; 5] = ["label", "probabilities", "top_k", "value", "error"];

impl Shown {
    fn of(steps: &[AfterStep]) -> Option<Shown> {
        let mut shown = Shown::default();
        for step in steps {
            match step {
                AfterStep::TopK { k } => shown.top_k = Some(*k),
                AfterStep::Fields { fields } => {
                    shown.fields = fields.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
                }
                _ => {}
            }
        }
        if shown.top_k.is_none() && shown.fields.is_empty() {
            return None;
        }
        for (name, value) in &shown.fields {
            shown.json.push(b',');
            // Writing a string or a checked scalar to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut shown.json, name);
            shown.json.push(b':');
            let _ = serde_json::to_writer(&mut shown.json, value);
            shown.csv.push(b',');
            match value {
                Value::String(text) => csv_str(&mut shown.csv, text),
                other => shown.csv.extend_from_slice(other.to_string().as_bytes()),
            }
        }
        Some(shown)
    }

    /// The classes of one row's probabilities to write, most probable first (a NaN is the
    /// least probable; ties keep the model's class order).
    pub fn top(&self, probabilities: &[f32]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        if let Some(k) = self.top_k {
            let key = |i: usize| {
                let p = probabilities[i];
                if p.is_nan() {
                    f32::NEG_INFINITY
                } else {
                    p
                }
            };
            order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
            order.truncate(k);
        }
        order
    }
}

impl After {
    /// Checks `steps` for a model that answers as `kind` ("classifier", "regressor" or
    /// "raw").
    pub fn compile(steps: &[AfterStep], kind: &str) -> Result<After, StepError> {
        for (index, step) in steps.iter().enumerate() {
            let fail = |message: String| StepError {
                list: "after",
                index,
                kind: step.kind(),
                message,
            };
            let takes_classes = step.needs_classes();
            if steps[..index].iter().any(|s| s.kind() == step.kind())
                && matches!(step, AfterStep::TopK { .. } | AfterStep::Fields { .. })
            {
                return Err(fail("it is listed twice; give it once".into()));
            }
            match kind {
                "classifier" => {}
                "regressor" if !takes_classes => {}
                _ if matches!(step, AfterStep::Fields { .. }) => {}
                _ => {
                    return Err(fail(format!(
                        "this model answers as a {kind}; the step takes {}",
                        if takes_classes {
                            "a classifier's classes"
                        } else {
                            "a classifier's probabilities or a regressor's values"
                        }
                    )))
                }
            }
            match step {
                AfterStep::RenameLabels { labels } if labels.is_empty() => {
                    return Err(fail("\"labels\" is empty".into()))
                }
                AfterStep::ClassThresholds { thresholds } => {
                    if thresholds.is_empty() {
                        return Err(fail("\"thresholds\" is empty".into()));
                    }
                    if let Some(t) = thresholds
                        .iter()
                        .find(|t| !(0.0..=1.0).contains(&t.at_least))
                    {
                        return Err(fail(format!(
                            "the threshold of {:?} must be between 0 and 1, got {}",
                            t.class, t.at_least
                        )));
                    }
                }
                AfterStep::Round { decimals } if *decimals > 9 => {
                    return Err(fail(format!(
                    "decimals must be at most 9 (a float32 holds about 7 digits), got {decimals}"
                )))
                }
                AfterStep::TopK { k } if !(1..=MAX_K).contains(k) => {
                    return Err(fail(format!("k must be from 1 to {MAX_K}, got {k}")))
                }
                AfterStep::Fields { fields } => check_fields(fields).map_err(fail)?,
                _ => {}
            }
        }
        Ok(After {
            steps: steps.to_vec(),
            shown: Shown::of(steps).map(Arc::new),
        })
    }

    /// How answers are written, when a step changes it.
    pub fn shown(&self) -> Option<&Arc<Shown>> {
        self.shown.as_ref()
    }

    /// The constant fields' names, for a model whose outputs are answered by name.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.shown
            .iter()
            .flat_map(|s| s.fields.keys().map(String::as_str))
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether labels may come out as names (a V2 label tensor is then BYTES).
    pub fn renames(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, AfterStep::RenameLabels { .. }))
    }

    /// A classifier's answer through the steps: `probabilities` is rows × `classes`.
    pub fn classifier(
        &self,
        labels: &mut [Label],
        classes: &mut [String],
        probabilities: &mut [f32],
    ) -> Result<(), String> {
        for (index, step) in self.steps.iter().enumerate() {
            let fail = |message: String| {
                StepError {
                    list: "after",
                    index,
                    kind: step.kind(),
                    message,
                }
                .to_string()
            };
            let c = classes.len();
            let takes_classes = step.names_classes();
            if let Some(x) = labels.iter().find_map(|l| match l {
                Label::Int(x) if takes_classes && !(0..c as i64).contains(x) => Some(*x),
                _ => None,
            }) {
                return Err(fail(format!(
                    "the model's integer labels (such as {x}) are not the numbers of its {c} \
                     probability columns; name its classes with class_labels"
                )));
            }
            match step {
                AfterStep::RenameLabels { labels: names } => {
                    if let Some(n) = names.keys().find(|n| !classes.contains(n)) {
                        return Err(fail(format!(
                            "the model has no class {n:?} (its classes: {})",
                            classes.join(", ")
                        )));
                    }
                    let mut renamed: Vec<&String> =
                        classes.iter().map(|c| names.get(c).unwrap_or(c)).collect();
                    renamed.sort();
                    if let Some(w) = renamed.windows(2).find(|w| w[0] == w[1]) {
                        return Err(fail(format!("two classes would both be named {:?}", w[0])));
                    }
                    rename(names, labels, classes)
                }
                AfterStep::ClassThresholds { thresholds } => {
                    let rules: Vec<(usize, f32)> = thresholds
                        .iter()
                        .map(|t| {
                            classes
                                .iter()
                                .position(|c| *c == t.class)
                                .map(|k| (k, t.at_least))
                                .ok_or_else(|| {
                                    fail(format!(
                                        "the model has no class {:?} (its classes: {})",
                                        t.class,
                                        classes.join(", ")
                                    ))
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    for (r, label) in labels.iter_mut().enumerate() {
                        let Some(p) = probabilities.get(r * c..(r + 1) * c) else {
                            break;
                        };
                        let k = rules
                            .iter()
                            .find(|(k, t)| p[*k] >= *t)
                            .map(|(k, _)| *k)
                            .unwrap_or_else(|| argmax(p.iter().map(|&x| f64::from(x))));
                        *label = label_of(label, &classes[k]);
                    }
                }
                AfterStep::Round { decimals } => {
                    for p in probabilities.iter_mut() {
                        *p = round_to(f64::from(*p), *decimals) as f32;
                    }
                }
                AfterStep::TopK { .. } | AfterStep::Fields { .. } => {}
            }
        }
        Ok(())
    }

    /// A regressor's values through the steps.
    pub fn regressor(&self, values: &mut [f64]) {
        for step in &self.steps {
            if let AfterStep::Round { decimals } = step {
                for v in values.iter_mut() {
                    *v = round_to(*v, *decimals);
                }
            }
        }
    }
}

fn check_fields(fields: &BTreeMap<String, Value>) -> Result<(), String> {
    if fields.is_empty() {
        return Err("\"fields\" is empty".into());
    }
    for (name, value) in fields {
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(format!(
                "{name:?} is not a field name: 1 to 128 characters, none of them control ones"
            ));
        }
        if TAKEN.contains(&name.as_str()) {
            return Err(format!(
                "{name:?} is a name the answer already uses ({})",
                TAKEN.join(", ")
            ));
        }
        match value {
            // Clients parse numbers as doubles: 1e999 or a thousand digits would be written
            // as they are and break them.
            Value::Number(x)
                if !x.as_f64().is_some_and(f64::is_finite) || x.to_string().len() > 32 =>
            {
                return Err(format!(
                    "the value of {name:?} must be a finite number of at most 32 characters, \
                     got {x}"
                ))
            }
            // A line break would split a CSV answer's line, and with it the rows-to-lines
            // match that SageMaker's AssembleWith=Line and transform's ids rely on.
            Value::String(text) if text.chars().any(char::is_control) || text.len() > 1024 => {
                return Err(format!(
                    "the value of {name:?} must be at most 1024 bytes with no control \
                     characters (line breaks, tabs)"
                ))
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(format!(
                    "the value of {name:?} must be a string, a number or a boolean (one CSV \
                     column), got {value}"
                ))
            }
        }
    }
    Ok(())
}

fn rename(names: &BTreeMap<String, String>, labels: &mut [Label], classes: &mut [String]) {
    for c in classes.iter_mut() {
        if let Some(n) = names.get(c.as_str()) {
            c.clone_from(n);
        }
    }
    for label in labels.iter_mut() {
        let new = match label {
            Label::Int(x) => names.get(&x.to_string()),
            Label::Str(s) => names.get(s.as_str()),
        };
        if let Some(n) = new {
            *label = Label::Str(n.clone());
        }
    }
}

/// The first index of the largest value (NaN never is).
pub fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (k, x) in values.enumerate() {
        if x > best.1 {
            best = (k, x);
        }
    }
    best.0
}

/// The label of class `name`, in the kind of label the model gave (an integer stays an
/// integer when the class name is one).
fn label_of(old: &Label, name: &str) -> Label {
    match (old, name.parse::<i64>()) {
        (Label::Int(_), Ok(x)) => Label::Int(x),
        _ => Label::Str(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ClassThreshold;
    use super::*;

    fn steps(json: &str) -> Vec<AfterStep> {
        serde_json::from_str::<super::super::Steps>(&format!(r#"{{"after": {json}}}"#))
            .unwrap()
            .after
    }

    #[test]
    fn renames_then_thresholds_then_rounds_in_order() {
        let after = After::compile(
            &steps(
                r#"[{"step": "rename_labels", "labels": {"0": "female", "1": "male"}},
                    {"step": "class_thresholds", "thresholds": [{"class": "male", "at_least": 0.3}]},
                    {"step": "round", "decimals": 2}]"#,
            ),
            "classifier",
        )
        .unwrap();
        let mut labels = vec![Label::Int(0), Label::Int(0), Label::Int(1)];
        let mut classes = vec!["0".to_string(), "1".to_string()];
        let mut probs = vec![0.8, 0.2, 0.65432, 0.34568, 0.1, 0.9];
        after
            .classifier(&mut labels, &mut classes, &mut probs)
            .unwrap();
        assert_eq!(classes, ["female", "male"]);
        // Row 1: 0.34568 >= 0.3 makes it male although female is more probable.
        assert_eq!(
            labels,
            [
                Label::Str("female".into()),
                Label::Str("male".into()),
                Label::Str("male".into())
            ]
        );
        assert_eq!(probs, [0.8, 0.2, 0.65, 0.35, 0.1, 0.9]);
    }

    #[test]
    fn without_a_threshold_met_the_most_probable_class_wins() {
        let after = After::compile(
            &[AfterStep::ClassThresholds {
                thresholds: vec![ClassThreshold {
                    class: "2".into(),
                    at_least: 0.5,
                }],
            }],
            "classifier",
        )
        .unwrap();
        let mut labels = vec![Label::Int(2), Label::Int(0)];
        let mut classes = vec!["0".into(), "1".into(), "2".into()];
        let mut probs = vec![0.2, 0.45, 0.35, 0.1, 0.3, 0.6];
        after
            .classifier(&mut labels, &mut classes, &mut probs)
            .unwrap();
        assert_eq!(labels, [Label::Int(1), Label::Int(2)]);
    }

    #[test]
    fn renames_must_name_classes_the_model_has_and_keep_them_apart() {
        let after = |json: &str| After::compile(&steps(json), "classifier").unwrap();
        let mut classes = vec!["0".to_string(), "1".to_string()];
        let err = after(r#"[{"step": "rename_labels", "labels": {"2": "x"}}]"#)
            .classifier(&mut [], &mut classes, &mut [])
            .unwrap_err();
        assert!(err.contains("no class \"2\""), "{err}");
        let err = after(r#"[{"step": "rename_labels", "labels": {"0": "1"}}]"#)
            .classifier(&mut [], &mut classes, &mut [])
            .unwrap_err();
        assert!(err.contains("both be named \"1\""), "{err}");
        // Labels -1 and 1 are not the column numbers 0 and 1.
        let err = after(r#"[{"step": "rename_labels", "labels": {"0": "neg"}}]"#)
            .classifier(&mut [Label::Int(-1)], &mut classes, &mut [0.5, 0.5])
            .unwrap_err();
        assert!(err.contains("integer labels (such as -1)"), "{err}");
    }

    #[test]
    fn a_class_the_model_lacks_is_named() {
        let after = After::compile(
            &steps(r#"[{"step": "class_thresholds", "thresholds": [{"class": "cat", "at_least": 0.5}]}]"#),
            "classifier",
        )
        .unwrap();
        let err = after
            .classifier(&mut [], &mut ["0".into(), "1".into()], &mut [])
            .unwrap_err();
        assert_eq!(
            err,
            "steps.after[0] (class_thresholds): the model has no class \"cat\" (its classes: 0, 1)"
        );
    }

    #[test]
    fn steps_that_do_not_fit_the_model_are_refused_at_load() {
        let e =
            |json: &str, kind: &str| After::compile(&steps(json), kind).unwrap_err().to_string();
        assert_eq!(
            e(r#"[{"step": "round", "decimals": 2}, {"step": "rename_labels", "labels": {"0": "a"}}]"#, "regressor"),
            "steps.after[1] (rename_labels): this model answers as a regressor; the step takes a classifier's classes"
        );
        assert!(e(r#"[{"step": "round", "decimals": 2}]"#, "raw").contains("answers as a raw"));
        assert!(e(r#"[{"step": "round", "decimals": 12}]"#, "classifier").contains("at most 9"));
        assert!(e(
            r#"[{"step": "class_thresholds", "thresholds": [{"class": "a", "at_least": 1.5}]}]"#,
            "classifier"
        )
        .contains("between 0 and 1, got 1.5"));
        assert!(e(r#"[{"step": "rename_labels", "labels": {}}]"#, "classifier").contains("empty"));
    }

    #[test]
    fn top_k_and_fields_are_checked_at_load() {
        let e =
            |json: &str, kind: &str| After::compile(&steps(json), kind).unwrap_err().to_string();
        assert_eq!(
            e(r#"[{"step": "top_k", "k": 0}]"#, "classifier"),
            "steps.after[0] (top_k): k must be from 1 to 65536, got 0"
        );
        assert!(e(r#"[{"step": "top_k", "k": 2}]"#, "regressor").contains("classifier's classes"));
        assert!(e(r#"[{"step": "top_k", "k": 2}]"#, "raw").contains("answers as a raw"));
        assert_eq!(
            e(
                r#"[{"step": "top_k", "k": 1}, {"step": "round", "decimals": 1}, {"step": "top_k", "k": 2}]"#,
                "classifier"
            ),
            "steps.after[2] (top_k): it is listed twice; give it once"
        );
        let f = |fields: &str, kind: &str| {
            e(
                &format!(r#"[{{"step": "fields", "fields": {fields}}}]"#),
                kind,
            )
        };
        assert!(f(r#"{"label": "x"}"#, "classifier").contains("\"label\" is a name the answer"));
        assert!(f(r#"{"value": 1}"#, "regressor").contains("already uses"));
        assert!(f(r#"{"tags": ["a"]}"#, "raw").contains("string, a number or a boolean"));
        assert!(f(r#"{"x": null}"#, "classifier").contains("got null"));
        assert!(f(r#"{"": 1}"#, "classifier").contains("is not a field name"));
        assert!(f("{}", "classifier").contains("\"fields\" is empty"));
        assert!(f(r#"{"v": "a\nb"}"#, "classifier").contains("no control characters"));
        assert!(f(r#"{"v": 1e999}"#, "classifier").contains("a finite number"));
        assert!(e(r#"[{"step": "top_k", "k": 100000}]"#, "classifier").contains("from 1 to 65536"));
        // Fields alone fit any answer, a raw one included.
        let raw = After::compile(
            &steps(r#"[{"step": "fields", "fields": {"v": 1.50, "ok": false}}]"#),
            "raw",
        )
        .unwrap();
        let shown = raw.shown().unwrap();
        assert_eq!(shown.top_k, None);
        // Numbers keep the config's text, as arbitrary_precision reads it.
        assert_eq!(
            String::from_utf8_lossy(&shown.json),
            r#","ok":false,"v":1.50"#
        );
        assert_eq!(String::from_utf8_lossy(&shown.csv), ",false,1.50");
        assert!(After::compile(
            &steps(r#"[{"step": "round", "decimals": 1}]"#),
            "classifier"
        )
        .unwrap()
        .shown()
        .is_none());
    }

    #[test]
    fn the_top_classes_are_the_most_probable_first_nan_last_ties_in_class_order() {
        let shown = Shown {
            top_k: Some(3),
            ..Shown::default()
        };
        assert_eq!(shown.top(&[0.2, f32::NAN, 0.5, 0.2, 0.1]), [2, 0, 3]);
        assert_eq!(shown.top(&[0.5]), [0]);
        assert_eq!(shown.top(&[]), Vec::<usize>::new());
        let all = Shown::default();
        assert_eq!(all.top(&[0.1, 0.9]), [0, 1]);
    }

    #[test]
    fn a_regressor_is_rounded() {
        let after =
            After::compile(&steps(r#"[{"step": "round", "decimals": 1}]"#), "regressor").unwrap();
        let mut v = [1.26, -0.04, f64::NAN];
        after.regressor(&mut v);
        assert_eq!(v[..2], [1.3, -0.0]);
        assert!(v[2].is_nan());
    }
}
