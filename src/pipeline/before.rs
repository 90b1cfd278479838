//! The `before` steps, compiled against the model's signature: each names its features by
//! slot (input, offset), so running one is a strided walk over the column that holds it.

use std::path::Path;
use std::sync::Arc;

use super::expr::{self, Expr};
use super::wasm::{self, Function, Running};
use super::{BeforeStep, StepError};
use crate::codec::{Column, Frame};
use crate::model::{ElemType, ModelConfig, ModelError, ModelSignature};

/// Where a feature's values are: input `input`, every `width`-th value from `offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slot {
    input: usize,
    width: usize,
    offset: usize,
}

#[derive(Clone, Debug)]
enum Op {
    Fill(Slot, f64),
    FillText(Slot, String),
    Num(Slot, NumFn),
    Text {
        slot: Slot,
        lowercase: bool,
        trim: bool,
    },
    /// `expr`'s variables index `reads`.
    Derive {
        slot: Slot,
        expr: Expr,
        reads: Vec<Slot>,
    },
    /// Step `step`'s function; `index` is its instance's place in a worker's `Scratch`.
    Wasm {
        step: usize,
        index: usize,
        function: Arc<Function>,
        slots: Vec<Slot>,
    },
}

/// A worker's own state for the steps: an instance of each function, made on first use and
/// again after a failure (a trap may leave an instance's memory in any state).
#[derive(Default)]
pub struct Scratch {
    running: Vec<Option<Running>>,
}

#[derive(Clone, Debug)]
enum NumFn {
    Clip(f64, f64),
    Log(f64),
    Scale(f64, f64),
    Bucketize(Vec<f64>),
}

impl NumFn {
    fn call(&self, x: f64) -> f64 {
        match self {
            // NaN compares false both ways, so a missing value stays missing.
            NumFn::Clip(lo, hi) => {
                if x < *lo {
                    *lo
                } else if x > *hi {
                    *hi
                } else {
                    x
                }
            }
            NumFn::Log(offset) => {
                let y = x + offset;
                if y > 0.0 {
                    y.ln()
                } else {
                    f64::NAN
                }
            }
            NumFn::Scale(center, scale) => (x - center) / scale,
            NumFn::Bucketize(_) if x.is_nan() => f64::NAN,
            NumFn::Bucketize(b) => b.partition_point(|&edge| edge <= x) as f64,
        }
    }
}

/// How one model input is made from the request's columns, when some of its features are
/// derived (the client does not send them).
#[derive(Clone, Debug)]
struct Input {
    /// The request column it comes from; None when every feature of it is derived.
    from: Option<usize>,
    /// Per offset: derived (filled in by a `derive` step) or sent.
    derived: Vec<bool>,
    elem: ElemType,
}

/// The compiled `before` steps of a model.
#[derive(Clone, Debug)]
pub struct Before {
    ops: Vec<Op>,
    /// Per model input, when the request leaves derived features out.
    expand: Option<Vec<Input>>,
}

impl Before {
    /// Compiles `steps` against the model's `sig`; also gives the signature requests are
    /// decoded against (the model's, less the derived features).
    pub fn compile(
        steps: &[BeforeStep],
        sig: &ModelSignature,
        config: &ModelConfig,
        dir: &Path,
    ) -> Result<(Before, ModelSignature), ModelError> {
        let mut c = Compiler::new(sig, steps, dir);
        let mut ops = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            c.index = index;
            c.step(step, &mut ops)
                .map_err(|message| ModelError::Config(c.error(step, message).to_string()))?;
        }
        let derived: Vec<bool> = c.derived_at.iter().map(Option::is_some).collect();
        if !derived.iter().any(|&d| d) {
            return Ok((Before { ops, expand: None }, sig.clone()));
        }
        let (request, expand) = request_signature(sig, &derived, config)?;
        Ok((
            Before {
                ops,
                expand: Some(expand),
            },
            request,
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.expand.is_none()
    }

    /// Whether a step calls a WebAssembly function.
    pub fn has_functions(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Wasm { .. }))
    }

    /// A worker's state for these steps.
    pub fn scratch(&self) -> Scratch {
        let n = self
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Wasm { .. }))
            .count();
        Scratch {
            running: (0..n).map(|_| None).collect(),
        }
    }

    /// The model's frame from a request's: derived features put in, every step run in order.
    /// Only a function can fail, and the error names its step.
    pub fn apply(&self, frame: Frame, scratch: &mut Scratch) -> Result<Frame, String> {
        let mut frame = match &self.expand {
            Some(inputs) => expand(frame, inputs),
            None => frame,
        };
        for op in &self.ops {
            match op {
                Op::Wasm {
                    step,
                    index,
                    function,
                    slots,
                } => call(function, *index, slots, &mut frame, scratch).map_err(|e| {
                    StepError {
                        list: "before",
                        index: *step,
                        kind: "wasm",
                        message: e,
                    }
                    .to_string()
                })?,
                _ => run(op, &mut frame),
            }
        }
        Ok(frame)
    }
}

/// The function of a `wasm` step on the frame's `slots`, in this worker's instance.
fn call(
    function: &Function,
    index: usize,
    slots: &[Slot],
    frame: &mut Frame,
    scratch: &mut Scratch,
) -> Result<(), String> {
    let rows = frame.rows;
    let cols = slots.len();
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for s in slots {
            data.push(read(frame, *s, r));
        }
    }
    let place = scratch
        .running
        .get_mut(index)
        .ok_or("no place for the function's instance")?;
    let running = match place {
        Some(r) => r,
        None => place.insert(function.start()?),
    };
    if let Err(e) = function.call(running, &mut data, rows, cols) {
        *place = None;
        return Err(e);
    }
    for (k, s) in slots.iter().enumerate() {
        let mut it = data.iter().skip(k).step_by(cols.max(1));
        update(frame, *s, |_| it.next().copied().unwrap_or(f64::NAN));
    }
    Ok(())
}

struct Compiler<'a> {
    sig: &'a ModelSignature,
    dir: &'a Path,
    functions: usize,
    slots: Vec<Slot>,
    /// Per feature, the step that derives it.
    derived_at: Vec<Option<usize>>,
    index: usize,
}

impl<'a> Compiler<'a> {
    fn new(sig: &'a ModelSignature, steps: &'a [BeforeStep], dir: &'a Path) -> Self {
        let mut seen = vec![0usize; sig.inputs.len()];
        let slots = sig
            .features
            .iter()
            .map(|f| {
                let offset = seen[f.input];
                seen[f.input] += 1;
                Slot {
                    input: f.input,
                    width: sig.inputs[f.input].width,
                    offset,
                }
            })
            .collect();
        let mut derived_at = vec![None; sig.features.len()];
        for (i, step) in steps.iter().enumerate() {
            if let BeforeStep::Derive { feature, .. } = step {
                if let Some(f) = sig.feature_index(feature) {
                    derived_at[f].get_or_insert(i);
                }
            }
        }
        Self {
            sig,
            dir,
            functions: 0,
            slots,
            derived_at,
            index: 0,
        }
    }

    fn error(&self, step: &BeforeStep, message: String) -> StepError {
        StepError {
            list: "before",
            index: self.index,
            kind: step.kind(),
            message,
        }
    }

    /// The feature `name`, which this step may read or change only once it has a value: a
    /// derived feature before the step that derives it has none.
    fn feature(&self, name: &str) -> Result<usize, String> {
        let Some(f) = self.sig.feature_index(name) else {
            return Err(format!(
                "{name:?} is not one of the model's features ({})",
                self.sig.feature_list()
            ));
        };
        match self.derived_at[f] {
            Some(at) if at >= self.index => Err(format!(
                "{name:?} is derived by steps.before[{at}], which does not run before this step"
            )),
            _ => Ok(f),
        }
    }

    fn float(&self, name: &str) -> Result<Slot, String> {
        let f = self.feature(name)?;
        match self.sig.features[f].elem {
            ElemType::Float32 | ElemType::Float64 => Ok(self.slots[f]),
            other => Err(format!(
                "{name:?} is a {other} feature; this step takes float features"
            )),
        }
    }

    fn floats(&self, names: &[String]) -> Result<Vec<Slot>, String> {
        listed_once(names)?;
        names.iter().map(|n| self.float(n)).collect()
    }

    fn step(&mut self, step: &BeforeStep, ops: &mut Vec<Op>) -> Result<(), String> {
        let finite = |what: &str, x: f64| {
            if x.is_finite() {
                Ok(x)
            } else {
                Err(format!("{what} must be a finite number, got {x}"))
            }
        };
        let num = |ops: &mut Vec<Op>, names: &[String], f: NumFn| -> Result<(), String> {
            for slot in self.floats(names)? {
                ops.push(Op::Num(slot, f.clone()));
            }
            Ok(())
        };
        match step {
            BeforeStep::FillMissing { values } => {
                if values.is_empty() {
                    return Err("\"values\" is empty".into());
                }
                for (name, value) in values {
                    let f = self.feature(name)?;
                    let slot = self.slots[f];
                    match (self.sig.features[f].elem, value) {
                        (ElemType::Float32 | ElemType::Float64, v) if v.is_number() => {
                            let x = v.as_f64().unwrap_or(f64::NAN);
                            ops.push(Op::Fill(slot, finite(name, x)?));
                        }
                        (ElemType::String, serde_json::Value::String(s)) => {
                            ops.push(Op::FillText(slot, s.clone()))
                        }
                        (ElemType::Float32 | ElemType::Float64, v) => {
                            return Err(format!(
                                "{name:?} is a float feature; its value must be a number, got {v}"
                            ))
                        }
                        (ElemType::String, v) => {
                            return Err(format!(
                                "{name:?} is a text feature; its value must be a string, got {v}"
                            ))
                        }
                        (other, _) => {
                            return Err(format!(
                                "{name:?} is a {other} feature, which has no missing value to fill"
                            ))
                        }
                    }
                }
            }
            BeforeStep::Clip { features, min, max } => {
                let lo = finite("min", min.unwrap_or(f64::MIN))?;
                let hi = finite("max", max.unwrap_or(f64::MAX))?;
                if min.is_none() && max.is_none() {
                    return Err("give \"min\", \"max\" or both".into());
                }
                if lo > hi {
                    return Err(format!("min {lo} is above max {hi}"));
                }
                num(ops, features, NumFn::Clip(lo, hi))?;
            }
            BeforeStep::Log { features, offset } => {
                num(ops, features, NumFn::Log(finite("offset", *offset)?))?;
            }
            BeforeStep::Scale {
                features,
                center,
                scale,
            } => {
                let scale = finite("scale", *scale)?;
                if scale == 0.0 {
                    return Err("scale must not be 0".into());
                }
                num(
                    ops,
                    features,
                    NumFn::Scale(finite("center", *center)?, scale),
                )?;
            }
            BeforeStep::Bucketize {
                features,
                boundaries,
            } => {
                if boundaries.is_empty() {
                    return Err("\"boundaries\" is empty".into());
                }
                for (i, b) in boundaries.iter().enumerate() {
                    finite("every boundary", *b)?;
                    if i > 0 && boundaries[i - 1] >= *b {
                        return Err(format!(
                            "boundaries must increase: {} is followed by {b}",
                            boundaries[i - 1]
                        ));
                    }
                }
                num(ops, features, NumFn::Bucketize(boundaries.clone()))?;
            }
            BeforeStep::NormalizeText {
                features,
                lowercase,
                trim,
            } => {
                listed_once(features)?;
                if !lowercase && !trim {
                    return Err("with lowercase and trim both false it would do nothing".into());
                }
                for name in features {
                    let f = self.feature(name)?;
                    if self.sig.features[f].elem != ElemType::String {
                        return Err(format!(
                            "{name:?} is a {} feature; normalize_text takes text features",
                            self.sig.features[f].elem
                        ));
                    }
                    ops.push(Op::Text {
                        slot: self.slots[f],
                        lowercase: *lowercase,
                        trim: *trim,
                    });
                }
            }
            BeforeStep::Derive {
                feature,
                expression,
            } => {
                let Some(f) = self.sig.feature_index(feature) else {
                    return Err(self.feature(feature).err().unwrap_or_default());
                };
                if self.derived_at[f] != Some(self.index) {
                    return Err(format!(
                        "{feature:?} is already derived by steps.before[{}]",
                        self.derived_at[f].unwrap_or(0)
                    ));
                }
                let target = match self.sig.features[f].elem {
                    ElemType::Float32 | ElemType::Float64 => self.slots[f],
                    other => {
                        return Err(format!(
                            "{feature:?} is a {other} feature; derive makes float features"
                        ))
                    }
                };
                let mut reads: Vec<Slot> = Vec::new();
                let mut problem = None;
                let mut resolve = |name: &str| -> Option<usize> {
                    let slot = match self.feature(name) {
                        _ if self.sig.feature_index(name) == Some(f) => {
                            Err(format!("it reads {name:?}, the feature it derives"))
                        }
                        Ok(g)
                            if !self.sig.features[g].elem.is_numeric()
                                || self.sig.features[g].elem == ElemType::Bool =>
                        {
                            Err(format!(
                                "it reads {name:?}, a {} feature; expressions read numbers",
                                self.sig.features[g].elem
                            ))
                        }
                        Ok(g) => Ok(self.slots[g]),
                        Err(e) => Err(e),
                    };
                    match slot {
                        Ok(s) => Some(reads.iter().position(|r| *r == s).unwrap_or_else(|| {
                            reads.push(s);
                            reads.len() - 1
                        })),
                        Err(e) => {
                            problem.get_or_insert(e);
                            None
                        }
                    }
                };
                let compiled = expr::compile(expression, &mut resolve);
                let expr = match (compiled, problem) {
                    (_, Some(p)) => return Err(format!("expression {expression:?}: {p}")),
                    (Err(e), None) => return Err(format!("expression {expression:?} {e}")),
                    (Ok(e), None) => e,
                };
                ops.push(Op::Derive {
                    slot: target,
                    expr,
                    reads,
                });
            }
            BeforeStep::Wasm {
                module,
                features,
                fuel_per_row,
                memory_mb,
            } => {
                let slots = self.floats(features)?;
                if !(1..=wasm::MAX_MEMORY_MB).contains(memory_mb) {
                    return Err(format!(
                        "memory_mb must be 1 to {} (a 32-bit module's memory), got {memory_mb}",
                        wasm::MAX_MEMORY_MB
                    ));
                }
                if !(1..=wasm::MAX_FUEL_PER_ROW).contains(fuel_per_row) {
                    return Err(format!(
                        "fuel_per_row must be 1 to {}, got {fuel_per_row}",
                        wasm::MAX_FUEL_PER_ROW
                    ));
                }
                let path = crate::model::inside(self.dir, "module", module, "the step")
                    .map_err(|e| e.to_string())?;
                let function = Function::load(&path, *fuel_per_row, *memory_mb)
                    .map_err(|e| format!("module {module:?}: {e}"))?;
                ops.push(Op::Wasm {
                    step: self.index,
                    index: self.functions,
                    function: Arc::new(function),
                    slots,
                });
                self.functions += 1;
            }
        }
        Ok(())
    }
}

/// A step's feature list: not empty, each feature once (twice would run the step twice).
fn listed_once(names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Err("\"features\" is empty".into());
    }
    match names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
    {
        Some((_, n)) => Err(format!("{n:?} is listed twice")),
        None => Ok(()),
    }
}

/// The request's signature: the model's less the derived features (an input left with none
/// is not asked for at all).
fn request_signature(
    sig: &ModelSignature,
    derived: &[bool],
    config: &ModelConfig,
) -> Result<(ModelSignature, Vec<Input>), ModelError> {
    let mut inputs = Vec::new();
    let mut expand = Vec::with_capacity(sig.inputs.len());
    let mut names = Vec::new();
    for (i, spec) in sig.inputs.iter().enumerate() {
        let mine: Vec<bool> = sig
            .features
            .iter()
            .zip(derived)
            .filter(|(f, _)| f.input == i)
            .map(|(_, &d)| d)
            .collect();
        let sent = mine.iter().filter(|&&d| !d).count();
        let from = (sent > 0).then_some(inputs.len());
        if sent > 0 {
            let mut spec = spec.clone();
            spec.width = sent;
            if let [_, f] = spec.shape.as_mut_slice() {
                if *f > 0 {
                    *f = sent as i64;
                }
            }
            inputs.push(spec);
        }
        expand.push(Input {
            from,
            derived: mine,
            elem: spec.elem,
        });
    }
    for (f, &d) in sig.features.iter().zip(derived) {
        if !d {
            names.push(f.name.clone());
        }
    }
    if inputs.is_empty() {
        return Err(ModelError::Config(
            "steps.before derives every feature: a request would have nothing to send".into(),
        ));
    }
    let config = ModelConfig {
        feature_names: names,
        ..config.clone()
    };
    let request = ModelSignature::new(inputs, sig.outputs.clone(), sig.fixed_batch, &config)?;
    Ok((request, expand))
}

/// Puts a placeholder (NaN) where each derived feature goes, for its `derive` step to fill.
fn expand(frame: Frame, inputs: &[Input]) -> Frame {
    let rows = frame.rows;
    let mut sent: Vec<Option<Column>> = frame.columns.into_iter().map(Some).collect();
    let columns = inputs
        .iter()
        .map(|input| {
            let taken = input
                .from
                .and_then(|i| sent.get_mut(i).and_then(Option::take));
            if !input.derived.contains(&true) {
                return taken.unwrap_or_else(|| Column::F32(Vec::new()));
            }
            match (input.elem, taken) {
                (ElemType::Float64, Some(Column::F64(v))) => {
                    Column::F64(interleave(&v, rows, &input.derived, f64::NAN))
                }
                (ElemType::Float64, _) => {
                    Column::F64(interleave(&[], rows, &input.derived, f64::NAN))
                }
                (_, Some(Column::F32(v))) => {
                    Column::F32(interleave(&v, rows, &input.derived, f32::NAN))
                }
                _ => Column::F32(interleave(&[], rows, &input.derived, f32::NAN)),
            }
        })
        .collect();
    Frame { rows, columns }
}

fn interleave<T: Copy>(sent: &[T], rows: usize, derived: &[bool], hole: T) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * derived.len());
    let mut it = sent.iter();
    for _ in 0..rows {
        for &d in derived {
            out.push(if d {
                hole
            } else {
                it.next().copied().unwrap_or(hole)
            });
        }
    }
    out
}

fn run(op: &Op, frame: &mut Frame) {
    match op {
        Op::Fill(slot, value) => update(frame, *slot, |x| if x.is_nan() { *value } else { x }),
        Op::Num(slot, f) => update(frame, *slot, |x| f.call(x)),
        Op::FillText(slot, value) => {
            if let Some(Column::Str(v)) = frame.columns.get_mut(slot.input) {
                for s in v.iter_mut().skip(slot.offset).step_by(slot.width.max(1)) {
                    if s.is_empty() {
                        s.clone_from(value);
                    }
                }
            }
        }
        Op::Text {
            slot,
            lowercase,
            trim,
        } => {
            if let Some(Column::Str(v)) = frame.columns.get_mut(slot.input) {
                for s in v.iter_mut().skip(slot.offset).step_by(slot.width.max(1)) {
                    if *trim {
                        let t = s.trim();
                        if t.len() != s.len() {
                            *s = t.to_string();
                        }
                    }
                    if *lowercase && s.chars().any(char::is_uppercase) {
                        *s = s.to_lowercase();
                    }
                }
            }
        }
        Op::Wasm { .. } => {}
        Op::Derive { slot, expr, reads } => {
            let values: Vec<f64> = (0..frame.rows)
                .map(|r| expr.eval(&|v| reads.get(v).map_or(f64::NAN, |s| read(frame, *s, r))))
                .collect();
            let mut it = values.into_iter();
            update(frame, *slot, |_| it.next().unwrap_or(f64::NAN));
        }
    }
}

/// Feature `slot` of row `r`, as a number.
fn read(frame: &Frame, slot: Slot, r: usize) -> f64 {
    let i = r * slot.width + slot.offset;
    match frame.columns.get(slot.input) {
        Some(Column::F32(v)) => v.get(i).map_or(f64::NAN, |&x| f64::from(x)),
        Some(Column::F64(v)) => v.get(i).copied().unwrap_or(f64::NAN),
        Some(Column::I64(v)) => v.get(i).map_or(f64::NAN, |&x| x as f64),
        Some(Column::I32(v)) => v.get(i).map_or(f64::NAN, |&x| f64::from(x)),
        _ => f64::NAN,
    }
}

/// Every value of float feature `slot`, row by row, through `f` (computed in f64).
fn update(frame: &mut Frame, slot: Slot, mut f: impl FnMut(f64) -> f64) {
    let step = slot.width.max(1);
    match frame.columns.get_mut(slot.input) {
        Some(Column::F32(v)) => {
            for x in v.iter_mut().skip(slot.offset).step_by(step) {
                *x = f(f64::from(*x)) as f32;
            }
        }
        Some(Column::F64(v)) => {
            for x in v.iter_mut().skip(slot.offset).step_by(step) {
                *x = f(*x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
