//! Several graphs served as one model (`"graphs"` in the config): a chain, whose graphs feed
//! each other by output and input name, or an ensemble, whose members score the same rows and
//! whose answers are combined. Either is checked when it loads, and runs as one unit
//! (`unit::Unit`): a batch goes through every graph before its session set takes the next.

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::session;
use crate::codec::{Column, Frame};
use crate::model::{
    output_spec, Label, ModelConfig, ModelError, ModelSignature, OutputData, OutputPlan,
    OutputSpec, OutputTensor, OutputType, Outputs, Port, Predictions,
};
use crate::pipeline::{Combine, Ensemble, Graphs};

/// One graph file's name (for messages) and what it takes and gives.
pub struct Member {
    pub name: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

#[derive(Debug)]
pub enum Layout {
    One,
    Chain(Chain),
    Ensemble(Combined),
}

#[derive(Debug)]
pub struct Chain {
    names: Vec<String>,
    /// Graphs in the order they run.
    order: Vec<usize>,
    /// Per graph, where each of its inputs (in its input order) comes from.
    feeds: Vec<Vec<Source>>,
    /// Per graph, its inputs' names.
    inputs: Vec<Vec<String>>,
    /// The graph whose outputs are the answer.
    sink: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// A column of the request's frame.
    Request(usize),
    Made {
        graph: usize,
        output: usize,
    },
}

#[derive(Debug)]
pub struct Combined {
    names: Vec<String>,
    plans: Vec<OutputPlan>,
    /// Summing to 1.
    weights: Vec<f64>,
    combine: Combine,
    answer: Answer,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// Integer labels: the label is the class number, probabilities a `[N, C]` tensor.
    IntLabels,
    /// Named classes: string labels, probabilities one map per row (as ZipMap gives them).
    TextLabels,
    Value,
}

fn elem(ty: &ValueType) -> Option<TensorElementType> {
    match ty {
        ValueType::Tensor { ty, .. } => Some(*ty),
        _ => None,
    }
}

/// A tensor's element type and its dimensions past the batch.
fn row_type(ty: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().skip(1).copied().collect())),
        _ => None,
    }
}

impl Layout {
    /// The layout of `graphs` (None: one graph) and the signature of the whole: what
    /// requests feed and what the answer is read from.
    pub fn compile(
        graphs: Option<&Graphs>,
        members: &[Member],
        config: &ModelConfig,
    ) -> Result<(Layout, ModelSignature), ModelError> {
        let fail = |m: String| ModelError::Config(format!("graphs: {m}"));
        match graphs {
            None => {
                let m = members
                    .first()
                    .ok_or_else(|| ModelError::Unsupported("no graph".into()))?;
                let outputs = m.outputs.iter().map(output_spec).collect();
                Ok((
                    Layout::One,
                    ModelSignature::from_ports(&m.inputs, outputs, config)?,
                ))
            }
            Some(Graphs::Chain(_)) => {
                let (chain, request) = chain(members).map_err(fail)?;
                let outputs = members[chain.sink]
                    .outputs
                    .iter()
                    .map(output_spec)
                    .collect();
                let sig = ModelSignature::from_ports(&request, outputs, config)?;
                Ok((Layout::Chain(chain), sig))
            }
            Some(Graphs::Ensemble(e)) => {
                let (combined, outputs) = ensemble(e, members, config)?;
                let sig = ModelSignature::from_ports(&members[0].inputs, outputs, config)?;
                Ok((Layout::Ensemble(combined), sig))
            }
        }
    }

    /// One line for `mlapp inspect`.
    pub fn describe(&self) -> Option<String> {
        match self {
            Layout::One => None,
            Layout::Chain(c) => Some(format!(
                "chain, run as {}; the answer is {}'s",
                c.order
                    .iter()
                    .map(|&g| format!("{} ({})", c.names[g], c.wiring(g)))
                    .collect::<Vec<_>>()
                    .join(" -> "),
                c.names[c.sink]
            )),
            Layout::Ensemble(e) => Some(format!(
                "ensemble ({:?}) of {}",
                e.combine,
                e.names
                    .iter()
                    .zip(&e.weights)
                    .map(|(n, w)| format!("{n} (weight {w:.3})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// A request's frame through every graph; `sessions` holds one per graph file, as
    /// listed.
    pub fn run(
        &self,
        sessions: &mut [Session],
        frame: Frame,
        abandoned: &dyn Fn() -> bool,
    ) -> Result<Outputs, String> {
        match self {
            Layout::One => match sessions.first_mut() {
                Some(s) => session::run_unless(s, frame, abandoned),
                None => Err("the model has no session".into()),
            },
            Layout::Chain(c) => c.run(sessions, frame, abandoned),
            Layout::Ensemble(e) => e.run(sessions, frame, abandoned),
        }
    }
}

fn chain(members: &[Member]) -> Result<(Chain, Vec<Port>), String> {
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut producer: std::collections::HashMap<&str, (usize, usize)> = Default::default();
    for (g, m) in members.iter().enumerate() {
        for (o, (name, _)) in m.outputs.iter().enumerate() {
            if let Some((h, _)) = producer.insert(name, (g, o)) {
                return Err(format!(
                    "{} and {} both make {name:?}; outputs are wired to inputs by name, so \
                     each name is made by one graph",
                    names[h], m.name
                ));
            }
        }
    }
    let mut request: Vec<Port> = Vec::new();
    let mut feeds = Vec::with_capacity(members.len());
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
    for (g, m) in members.iter().enumerate() {
        let mut feed = Vec::with_capacity(m.inputs.len());
        for (name, ty) in &m.inputs {
            if let Some(&(h, o)) = producer.get(name.as_str()) {
                if h == g {
                    return Err(format!(
                        "{} reads its own output {name:?}: the chain has a cycle",
                        m.name
                    ));
                }
                let made = &members[h].outputs[o].1;
                if elem(made).is_none() || elem(made) != elem(ty) {
                    return Err(format!(
                        "{} takes {name:?} as {ty}, but {} makes it as {made}",
                        m.name, names[h]
                    ));
                }
                feed.push(Source::Made {
                    graph: h,
                    output: o,
                });
                deps[g].push(h);
                continue;
            }
            let i = match request.iter().position(|(n, _)| n == name) {
                Some(i) if elem(&request[i].1) != elem(ty) => {
                    return Err(format!(
                        "two graphs take the request's {name:?}, as {} and as {ty}",
                        request[i].1
                    ))
                }
                Some(i) => i,
                None => {
                    request.push((name.clone(), ty.clone()));
                    request.len() - 1
                }
            };
            feed.push(Source::Request(i));
        }
        feeds.push(feed);
    }
    // In the listed order where the wiring allows it.
    let mut done = vec![false; members.len()];
    let mut order = Vec::with_capacity(members.len());
    while let Some(g) = (0..members.len()).find(|&g| !done[g] && deps[g].iter().all(|&h| done[h])) {
        done[g] = true;
        order.push(g);
    }
    if order.len() < members.len() {
        let stuck: Vec<&str> = (0..members.len())
            .filter(|&g| !done[g])
            .map(|g| names[g].as_str())
            .collect();
        return Err(format!(
            "the chain has a cycle: {} each wait for another's output",
            stuck.join(", ")
        ));
    }
    let sinks: Vec<usize> = (0..members.len())
        .filter(|g| !deps.iter().any(|d| d.contains(g)))
        .collect();
    let [sink] = sinks[..] else {
        let ends: Vec<&str> = sinks.iter().map(|&g| names[g].as_str()).collect();
        return Err(format!(
            "{} each end the chain (no graph reads their outputs); a chain has one last \
             graph, whose outputs are the answer",
            ends.join(" and ")
        ));
    };
    if request.is_empty() {
        return Err("no graph of the chain takes an input from the request".into());
    }
    Ok((
        Chain {
            names,
            order,
            feeds,
            inputs: members
                .iter()
                .map(|m| m.inputs.iter().map(|(n, _)| n.clone()).collect())
                .collect(),
            sink,
        },
        request,
    ))
}

impl Chain {
    /// Where graph `g`'s inputs come from, for `inspect`.
    fn wiring(&self, g: usize) -> String {
        self.feeds[g]
            .iter()
            .zip(&self.inputs[g])
            .map(|(src, name)| match *src {
                Source::Request(_) => format!("{name} from the request"),
                Source::Made { graph, .. } => format!("{name} from {}", self.names[graph]),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn run(
        &self,
        sessions: &mut [Session],
        frame: Frame,
        abandoned: &dyn Fn() -> bool,
    ) -> Result<Outputs, String> {
        let rows = frame.rows;
        let mut made: Vec<Option<Outputs>> = (0..self.names.len()).map(|_| None).collect();
        for &g in &self.order {
            let columns = self.feeds[g]
                .iter()
                .map(|src| match *src {
                    Source::Request(i) => frame
                        .columns
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("the request has no input {i}")),
                    Source::Made { graph, output } => made[graph]
                        .as_ref()
                        .and_then(|o| o.tensors.get(output))
                        .ok_or_else(|| format!("{} has not run", self.names[graph]))
                        .and_then(column_of),
                })
                .collect::<Result<Vec<Column>, String>>()?;
            let session = sessions
                .get_mut(g)
                .ok_or_else(|| format!("no session for {}", self.names[g]))?;
            let out = session::run_unless(session, Frame { rows, columns }, abandoned)
                .map_err(|e| format!("{}: {e}", self.names[g]))?;
            made[g] = Some(out);
        }
        made[self.sink]
            .take()
            .ok_or_else(|| format!("{} has not run", self.names[self.sink]))
    }
}

/// A graph's output as the input of the next.
fn column_of(t: &OutputTensor) -> Result<Column, String> {
    Ok(match &t.data {
        OutputData::F32(v) => Column::F32(v.clone()),
        OutputData::F64(v) => Column::F64(v.clone()),
        OutputData::I64(v) => Column::I64(v.clone()),
        OutputData::I32(v) => Column::I32(v.clone()),
        OutputData::Bool(v) => Column::Bool(v.clone()),
        OutputData::Str(v) => Column::Str(v.clone()),
        OutputData::MapI64(_) | OutputData::MapStr(_) => {
            return Err(format!("output {:?} is not a tensor", t.name))
        }
    })
}

fn ensemble(
    e: &Ensemble,
    members: &[Member],
    config: &ModelConfig,
) -> Result<(Combined, Vec<OutputSpec>), ModelError> {
    let fail = |m: String| ModelError::Config(format!("graphs.ensemble: {m}"));
    let first = &members[0];
    let same = |a: &[Port], b: &[Port]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && row_type(&x.1) == row_type(&y.1))
    };
    let own = ModelConfig {
        feature_names: config.feature_names.clone(),
        ..ModelConfig::default()
    };
    let mut plans = Vec::with_capacity(members.len());
    let mut answer = None;
    for m in members {
        if !same(&m.inputs, &first.inputs) {
            let list = |p: &[Port]| {
                p.iter()
                    .map(|(n, t)| format!("{n}: {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(fail(format!(
                "{} takes ({}) but {} takes ({}): members take the same inputs",
                m.name,
                list(&m.inputs),
                first.name,
                list(&first.inputs)
            )));
        }
        let outputs = m.outputs.iter().map(output_spec).collect();
        let sig = ModelSignature::from_ports(&m.inputs, outputs, &own)?;
        let plan = OutputPlan::choose(&sig, &own)?;
        let this = match &plan {
            OutputPlan::Classifier { label, .. } => {
                if sig.outputs[*label].tensor_elem() == Some("string") {
                    Answer::TextLabels
                } else {
                    Answer::IntLabels
                }
            }
            OutputPlan::Regressor { .. } if e.combine == Combine::Vote => {
                return Err(fail(format!(
                    "{} is a regressor; members that vote are classifiers",
                    m.name
                )))
            }
            OutputPlan::Regressor { .. } => Answer::Value,
            OutputPlan::Raw { .. } => {
                return Err(fail(format!(
                    "{} answers with raw outputs; members are classifiers or regressors",
                    m.name
                )))
            }
        };
        match answer {
            Some(a) if a != this => {
                return Err(fail(format!(
                    "{} answers with {this:?} and {} with {a:?}: members answer alike",
                    m.name, first.name
                )))
            }
            _ => answer = Some(this),
        }
        plans.push(plan);
    }
    let answer = answer.unwrap_or(Answer::Value);
    let raw = if e.weights.is_empty() {
        vec![1.0; members.len()]
    } else {
        e.weights.clone()
    };
    let total: f64 = raw.iter().sum();
    let tensor = |name: &str, elem: &str, shape: Vec<i64>| OutputSpec {
        name: name.into(),
        ty: OutputType::Tensor {
            elem: elem.into(),
            shape,
        },
    };
    let outputs = match answer {
        Answer::IntLabels => vec![
            tensor("label", "int64", vec![-1]),
            tensor("probabilities", "float32", vec![-1, -1]),
        ],
        Answer::TextLabels => vec![
            tensor("label", "string", vec![-1]),
            OutputSpec {
                name: "probabilities".into(),
                ty: OutputType::SeqMap {
                    key: "string".into(),
                },
            },
        ],
        Answer::Value => vec![tensor("value", "float64", vec![-1])],
    };
    Ok((
        Combined {
            names: members.iter().map(|m| m.name.clone()).collect(),
            plans,
            weights: raw.iter().map(|w| w / total).collect(),
            combine: e.combine,
            answer,
        },
        outputs,
    ))
}

impl Combined {
    fn run(
        &self,
        sessions: &mut [Session],
        frame: Frame,
        abandoned: &dyn Fn() -> bool,
    ) -> Result<Outputs, String> {
        let rows = frame.rows;
        let mut classes: Option<Vec<String>> = None;
        let mut acc: Vec<f64> = Vec::new();
        for (m, session) in sessions.iter_mut().enumerate() {
            let name = &self.names[m];
            let w = self.weights[m];
            let out = session::run_unless(session, frame.clone(), abandoned)
                .and_then(|o| self.plans[m].apply(o))
                .map_err(|e| format!("{name}: {e}"))?;
            match out {
                Predictions::Classifier {
                    labels,
                    classes: mine,
                    probabilities,
                    ..
                } => {
                    let c = mine.len();
                    // A member's answer is checked before it is indexed: a graph that reduces
                    // over rows, or a ZipMap with a map missing, must fail its batch, not the
                    // worker.
                    if labels.len() != rows
                        || probabilities.len() != rows * c
                        || (rows > 0 && c == 0)
                    {
                        return Err(format!(
                            "{name} answered {} labels and {} probabilities ({c} classes) for \
                             {rows} rows",
                            labels.len(),
                            probabilities.len()
                        ));
                    }
                    match &classes {
                        None => acc = vec![0.0; rows * c],
                        Some(first) if *first != mine => {
                            return Err(format!(
                                "{name} gives the classes [{}] but {} gives [{}]; the members \
                                 of an ensemble have the same classes",
                                mine.join(", "),
                                self.names[0],
                                first.join(", ")
                            ))
                        }
                        Some(_) => {}
                    }
                    for r in 0..rows {
                        let p = &probabilities[r * c..(r + 1) * c];
                        match self.combine {
                            Combine::Mean => {
                                for k in 0..c {
                                    acc[r * c + k] += w * f64::from(p[k]);
                                }
                            }
                            Combine::Vote => {
                                let text = match &labels[r] {
                                    Label::Int(x) => x.to_string(),
                                    Label::Str(s) => s.clone(),
                                };
                                let k = mine.iter().position(|c| *c == text).ok_or_else(|| {
                                    format!(
                                        "{name} voted {text:?}, which is not one of its \
                                         classes ({}); name them with class_labels",
                                        mine.join(", ")
                                    )
                                })?;
                                acc[r * c + k] += w;
                            }
                        }
                    }
                    classes = Some(mine);
                }
                Predictions::Regressor { values, .. } => {
                    if values.len() != rows {
                        return Err(format!(
                            "{name} answered {} values for {rows} rows",
                            values.len()
                        ));
                    }
                    acc.resize(rows, 0.0);
                    for (a, v) in acc.iter_mut().zip(values) {
                        *a += w * v;
                    }
                }
                Predictions::Raw { .. } => return Err(format!("{name} gave raw outputs")),
            }
        }
        let tensors = match (self.answer, classes) {
            (Answer::Value, _) => vec![OutputTensor {
                name: "value".into(),
                shape: vec![rows],
                data: OutputData::F64(acc),
            }],
            (answer, Some(classes)) => {
                let c = classes.len();
                let best: Vec<usize> = (0..rows)
                    .map(|r| argmax(acc[r * c..(r + 1) * c].iter().copied()))
                    .collect();
                if best.iter().any(|&k| k >= c) {
                    return Err("the ensemble has no class to answer with".into());
                }
                let (label, probabilities) = if answer == Answer::IntLabels {
                    let label = best
                        .iter()
                        .map(|&k| {
                            classes[k]
                                .parse::<i64>()
                                .map_err(|_| format!("class {:?} is not a number", classes[k]))
                        })
                        .collect::<Result<Vec<i64>, String>>()?;
                    (
                        OutputData::I64(label),
                        OutputData::F32(acc.iter().map(|&p| p as f32).collect()),
                    )
                } else {
                    (
                        OutputData::Str(best.iter().map(|&k| classes[k].clone()).collect()),
                        OutputData::MapStr(
                            (0..rows)
                                .map(|r| {
                                    classes
                                        .iter()
                                        .enumerate()
                                        .map(|(k, name)| (name.clone(), acc[r * c + k] as f32))
                                        .collect()
                                })
                                .collect(),
                        ),
                    )
                };
                let proba_shape = match probabilities {
                    OutputData::F32(_) => vec![rows, c],
                    _ => vec![rows],
                };
                vec![
                    OutputTensor {
                        name: "label".into(),
                        shape: vec![rows],
                        data: label,
                    },
                    OutputTensor {
                        name: "probabilities".into(),
                        shape: proba_shape,
                        data: probabilities,
                    },
                ]
            }
            (_, None) => return Err("the ensemble has no member".into()),
        };
        Ok(Outputs { rows, tensors })
    }
}

use crate::pipeline::after::argmax;
