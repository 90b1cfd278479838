//! How a model's raw outputs become per-row predictions.
//!
//! The plan is chosen once at load time from the signature and the config: a classifier (a
//! label output plus probabilities, as a tensor or ZipMap's `seq(map)`), a regressor (one
//! numeric output), or every selected output by name.

use serde::Serialize;

use super::config::ModelConfig;
use super::signature::{ModelSignature, OutputType};
use super::ModelError;
use std::sync::Arc;

use crate::pipeline::after::Shown;
use crate::pipeline::After;

/// An output copied out of ONNX Runtime, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    MapI64(Vec<Vec<(i64, f32)>>),
    MapStr(Vec<Vec<(String, f32)>>),
}

impl OutputData {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Str(v) => v.len(),
            Self::MapI64(v) => v.len(),
            Self::MapStr(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: OutputData,
}

impl OutputTensor {
    /// Values per row (1 for `[N]`); maps count as one value per row.
    pub fn row_width(&self, rows: usize) -> usize {
        self.data.len().checked_div(rows).unwrap_or(0)
    }
}

/// All outputs of one run, in the session's output order.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub rows: usize,
    pub tensors: Vec<OutputTensor>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputPlan {
    Classifier {
        label: usize,
        probabilities: usize,
        class_labels: Vec<String>,
        threshold: Option<f32>,
        /// The config's `after` steps.
        #[serde(skip_serializing_if = "After::is_empty")]
        after: After,
    },
    Regressor {
        value: usize,
        #[serde(skip_serializing_if = "After::is_empty")]
        after: After,
    },
    Raw {
        outputs: Vec<usize>,
        /// Only `fields` steps: the others need a classifier's or a regressor's answer.
        #[serde(skip_serializing_if = "After::is_empty")]
        after: After,
    },
}

impl OutputPlan {
    /// How the graph's outputs are read, and the config's `after` steps checked against that.
    pub fn choose(sig: &ModelSignature, config: &ModelConfig) -> Result<Self, ModelError> {
        let mut plan = Self::read(sig, config)?;
        let steps = After::compile(&config.steps.after, plan.kind())
            .map_err(|e| ModelError::Config(e.to_string()))?;
        match &mut plan {
            Self::Classifier { after, .. } | Self::Regressor { after, .. } => *after = steps,
            Self::Raw { outputs, after } => {
                // A raw answer is an object of outputs by name, which a field must not hide.
                if let Some(name) = steps
                    .field_names()
                    .find(|n| outputs.iter().any(|&i| sig.outputs[i].name == *n))
                {
                    return Err(ModelError::Config(format!(
                        "steps.after (fields): {name:?} is also the name of one of the \
                         model's outputs"
                    )));
                }
                *after = steps
            }
        }
        Ok(plan)
    }

    fn read(sig: &ModelSignature, config: &ModelConfig) -> Result<Self, ModelError> {
        let selected: Vec<usize> = if config.outputs.is_empty() {
            (0..sig.outputs.len()).collect()
        } else {
            config
                .outputs
                .iter()
                .map(|name| {
                    sig.output_index(name).ok_or_else(|| {
                        ModelError::Config(format!(
                            "outputs names \"{name}\", but the model's outputs are {}",
                            sig.outputs
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let is_label = |i: &usize| {
            let o = &sig.outputs[*i];
            matches!(o.tensor_elem(), Some("int64" | "int32" | "string"))
                && matches!(&o.ty, OutputType::Tensor { shape, .. }
                    if shape.len() == 1 || (shape.len() == 2 && shape[1] == 1))
        };
        let is_proba = |i: &usize| {
            let o = &sig.outputs[*i];
            matches!(&o.ty, OutputType::SeqMap { .. })
                || (matches!(o.tensor_elem(), Some("float32" | "float64"))
                    && o.tensor_rank() == Some(2))
        };
        let label = selected.iter().copied().find(is_label);
        let proba = selected.iter().copied().find(is_proba);
        if let (Some(label), Some(probabilities), 2) = (label, proba, selected.len()) {
            if let OutputType::Tensor { shape, .. } = &sig.outputs[probabilities].ty {
                let classes = shape[1];
                if classes > 0
                    && !config.class_labels.is_empty()
                    && config.class_labels.len() != classes as usize
                {
                    return Err(ModelError::Config(format!(
                        "class_labels lists {} classes but output \"{}\" has {classes}",
                        config.class_labels.len(),
                        sig.outputs[probabilities].name
                    )));
                }
            }
            if config.threshold.is_some()
                && config.class_labels.is_empty()
                && sig.outputs[label].tensor_elem() == Some("string")
            {
                return Err(ModelError::Config(
                    "threshold needs class_labels for a model with string labels".into(),
                ));
            }
            return Ok(Self::Classifier {
                label,
                probabilities,
                class_labels: config.class_labels.clone(),
                threshold: config.threshold,
                after: After::default(),
            });
        }
        if config.threshold.is_some() {
            return Err(ModelError::Config(
                "threshold is set but the model has no label + probabilities outputs".into(),
            ));
        }
        if let [only] = selected.as_slice() {
            let o = &sig.outputs[*only];
            let scalar_rows = matches!(&o.ty, OutputType::Tensor { shape, .. }
                if shape.len() == 1 || (shape.len() == 2 && shape[1] == 1));
            if scalar_rows && matches!(o.tensor_elem(), Some("float32" | "float64")) {
                return Ok(Self::Regressor {
                    value: *only,
                    after: After::default(),
                });
            }
        }
        Ok(Self::Raw {
            outputs: selected,
            after: After::default(),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Classifier { .. } => "classifier",
            Self::Regressor { .. } => "regressor",
            Self::Raw { .. } => "raw",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Label {
    Int(i64),
    Str(String),
}

/// Per-row results, ready for an encoder.
#[derive(Debug)]
pub enum Predictions {
    Classifier {
        labels: Vec<Label>,
        classes: Vec<String>,
        /// rows × classes, row-major.
        probabilities: Vec<f32>,
        /// How the answer is written beyond its values (`top_k`, `fields`).
        shown: Option<Arc<Shown>>,
    },
    Regressor {
        values: Vec<f64>,
        /// The model gave float32: print the shortest text that reads back as that float32.
        float32: bool,
        shown: Option<Arc<Shown>>,
    },
    Raw {
        rows: usize,
        tensors: Vec<OutputTensor>,
        shown: Option<Arc<Shown>>,
    },
}

impl Predictions {
    /// The answer as the model's values alone, before `top_k` and `fields`.
    pub fn plain(mut self) -> Self {
        match &mut self {
            Self::Classifier { shown, .. }
            | Self::Regressor { shown, .. }
            | Self::Raw { shown, .. } => *shown = None,
        }
        self
    }

    /// What the `top_k` and `fields` steps add to how the answer is written.
    pub fn shown(&self) -> Option<&Arc<Shown>> {
        match self {
            Self::Classifier { shown, .. }
            | Self::Regressor { shown, .. }
            | Self::Raw { shown, .. } => shown.as_ref(),
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Self::Classifier { labels, .. } => labels.len(),
            Self::Regressor { values, .. } => values.len(),
            Self::Raw { rows, .. } => *rows,
        }
    }
}

impl OutputPlan {
    /// Shapes the outputs of one run. An error here means the model broke its own signature.
    pub fn apply(&self, out: Outputs) -> Result<Predictions, String> {
        let rows = out.rows;
        match self {
            Self::Classifier {
                label,
                probabilities,
                class_labels,
                threshold,
                after,
            } => {
                let (classes, probs) = probabilities_of(&out.tensors[*probabilities], rows)?;
                let classes = if class_labels.is_empty() {
                    classes
                } else if class_labels.len() == classes.len() {
                    class_labels.clone()
                } else {
                    return Err(format!(
                        "class_labels lists {} classes but the model gave {}",
                        class_labels.len(),
                        classes.len()
                    ));
                };
                let mut labels = match threshold {
                    Some(t) if classes.len() == 2 => (0..rows)
                        .map(|r| {
                            let k = usize::from(probs[r * 2 + 1] >= *t);
                            if class_labels.is_empty() {
                                Label::Int(k as i64)
                            } else {
                                Label::Str(class_labels[k].clone())
                            }
                        })
                        .collect(),
                    Some(_) => {
                        return Err(format!(
                            "threshold applies to binary classifiers; this one has {} classes",
                            classes.len()
                        ))
                    }
                    None => labels_of(&out.tensors[*label], rows, class_labels)?,
                };
                let (mut classes, mut probs) = (classes, probs);
                after.classifier(&mut labels, &mut classes, &mut probs)?;
                Ok(Predictions::Classifier {
                    labels,
                    classes,
                    probabilities: probs,
                    shown: after.shown().cloned(),
                })
            }
            Self::Regressor { value, after } => {
                let t = &out.tensors[*value];
                let (values, float32): (Vec<f64>, bool) = match &t.data {
                    OutputData::F32(v) => (v.iter().map(|&x| f64::from(x)).collect(), true),
                    OutputData::F64(v) => (v.clone(), false),
                    _ => return Err(format!("output \"{}\" is not numeric", t.name)),
                };
                if values.len() != rows {
                    return Err(format!(
                        "output \"{}\" has {} values for {rows} rows",
                        t.name,
                        values.len()
                    ));
                }
                let mut values = values;
                after.regressor(&mut values);
                Ok(Predictions::Regressor {
                    values,
                    float32,
                    shown: after.shown().cloned(),
                })
            }
            Self::Raw { outputs, after } => {
                let mut tensors: Vec<Option<OutputTensor>> =
                    out.tensors.into_iter().map(Some).collect();
                let picked = outputs
                    .iter()
                    .filter_map(|&i| tensors.get_mut(i).and_then(Option::take))
                    .collect();
                Ok(Predictions::Raw {
                    rows,
                    tensors: picked,
                    shown: after.shown().cloned(),
                })
            }
        }
    }
}

/// A probability output as (class names, rows × classes), for a classifier's answer and for
/// ZipMap's maps on the Open Inference Protocol.
pub(crate) fn probabilities_of(
    t: &OutputTensor,
    rows: usize,
) -> Result<(Vec<String>, Vec<f32>), String> {
    if rows == 0 {
        return Ok((vec![], vec![]));
    }
    // Every row its own probability for each class: a short or ragged output would put one
    // row's numbers in another's place.
    let classes = |len: usize| match len / rows {
        c if c > 0 && c * rows == len => Ok(c),
        _ => Err(format!(
            "output \"{}\" has {len} probabilities for {rows} rows",
            t.name
        )),
    };
    match &t.data {
        OutputData::F32(v) => {
            let c = classes(v.len())?;
            Ok(((0..c).map(|k| k.to_string()).collect(), v.clone()))
        }
        OutputData::F64(v) => {
            let c = classes(v.len())?;
            Ok((
                (0..c).map(|k| k.to_string()).collect(),
                v.iter().map(|&x| x as f32).collect(),
            ))
        }
        OutputData::MapI64(maps) if maps.len() == rows => zipmap(maps, |k| k.to_string()),
        OutputData::MapStr(maps) if maps.len() == rows => zipmap(maps, |k| k.clone()),
        OutputData::MapI64(_) | OutputData::MapStr(_) => Err(format!(
            "output \"{}\" has {} maps of probabilities for {rows} rows",
            t.name,
            t.data.len()
        )),
        _ => Err(format!("output \"{}\" does not hold probabilities", t.name)),
    }
}

/// ZipMap gives one map per row; the class order of the first row is kept for all rows.
fn zipmap<K: PartialEq>(
    maps: &[Vec<(K, f32)>],
    name: impl Fn(&K) -> String,
) -> Result<(Vec<String>, Vec<f32>), String> {
    let Some(first) = maps.first() else {
        return Ok((vec![], vec![]));
    };
    let keys: Vec<&K> = first.iter().map(|(k, _)| k).collect();
    let mut probs = Vec::with_capacity(maps.len() * keys.len());
    for (r, m) in maps.iter().enumerate() {
        for k in &keys {
            let p = m
                .iter()
                .find(|(mk, _)| mk == *k)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("row {}: ZipMap output lacks class {}", r + 1, name(k)))?;
            probs.push(p);
        }
    }
    Ok((keys.iter().map(|k| name(k)).collect(), probs))
}

fn labels_of(t: &OutputTensor, rows: usize, class_labels: &[String]) -> Result<Vec<Label>, String> {
    let int_label = |v: i64| match usize::try_from(v).ok().and_then(|k| class_labels.get(k)) {
        Some(name) => Label::Str(name.clone()),
        None => Label::Int(v),
    };
    let labels: Vec<Label> = match &t.data {
        OutputData::I64(v) => v.iter().map(|&x| int_label(x)).collect(),
        OutputData::I32(v) => v.iter().map(|&x| int_label(i64::from(x))).collect(),
        OutputData::Str(v) => v.iter().cloned().map(Label::Str).collect(),
        _ => return Err(format!("output \"{}\" does not hold labels", t.name)),
    };
    if labels.len() != rows {
        return Err(format!(
            "output \"{}\" has {} labels for {rows} rows",
            t.name,
            labels.len()
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier(class_labels: Vec<String>, threshold: Option<f32>) -> OutputPlan {
        OutputPlan::Classifier {
            label: 0,
            probabilities: 1,
            class_labels,
            threshold,
            after: After::default(),
        }
    }

    fn outputs(labels: Vec<i64>, probs: Vec<f32>) -> Outputs {
        let rows = labels.len();
        Outputs {
            rows,
            tensors: vec![
                OutputTensor {
                    name: "label".into(),
                    shape: vec![rows],
                    data: OutputData::I64(labels),
                },
                OutputTensor {
                    name: "probabilities".into(),
                    shape: vec![rows, 2],
                    data: OutputData::F32(probs),
                },
            ],
        }
    }

    #[test]
    fn probabilities_that_do_not_fill_every_row_are_refused() {
        let plan = classifier(vec![], None);
        for probs in [vec![0.5], vec![0.1, 0.9, 0.3]] {
            let e = plan.apply(outputs(vec![1, 0], probs)).unwrap_err();
            assert!(e.contains("probabilities for 2 rows"), "{e}");
        }
        // ZipMap's maps: one per row.
        let mut short = outputs(vec![1, 0], vec![0.5, 0.5, 0.5, 0.5]);
        short.tensors[1].data = OutputData::MapI64(vec![vec![(0, 0.5), (1, 0.5)]]);
        let e = plan.apply(short).unwrap_err();
        assert!(e.contains("1 maps of probabilities for 2 rows"), "{e}");
    }

    #[test]
    fn integer_labels_are_named_by_class_labels() {
        let plan = classifier(vec!["female".into(), "male".into()], None);
        let p = plan
            .apply(outputs(vec![1, 0], vec![0.2, 0.8, 0.6, 0.4]))
            .unwrap();
        let Predictions::Classifier {
            labels, classes, ..
        } = p
        else {
            panic!("not a classifier")
        };
        assert_eq!(
            labels,
            vec![Label::Str("male".into()), Label::Str("female".into())]
        );
        assert_eq!(classes, vec!["female", "male"]);
    }

    #[test]
    fn threshold_overrides_the_model_label() {
        let plan = classifier(vec![], Some(0.9));
        let p = plan
            .apply(outputs(vec![1, 1], vec![0.2, 0.8, 0.05, 0.95]))
            .unwrap();
        let Predictions::Classifier { labels, .. } = p else {
            panic!("not a classifier")
        };
        assert_eq!(labels, vec![Label::Int(0), Label::Int(1)]);
    }

    #[test]
    fn zipmap_keeps_first_row_class_order() {
        let maps = vec![vec![(0i64, 0.3), (1, 0.7)], vec![(1, 0.1), (0, 0.9)]];
        let (classes, probs) = zipmap(&maps, |k| k.to_string()).unwrap();
        assert_eq!(classes, vec!["0", "1"]);
        assert_eq!(probs, vec![0.3, 0.7, 0.9, 0.1]);
    }

    #[test]
    fn zipmap_missing_class_is_an_error_not_a_panic() {
        let maps = vec![vec![(0i64, 0.3), (1, 0.7)], vec![(0, 0.9)]];
        let err = zipmap(&maps, |k| k.to_string()).unwrap_err();
        assert!(err.contains("row 2"), "{err}");
    }
}
