//! The Open Inference Protocol (KServe V2) over REST: typed tensors in, typed tensors out, as
//! JSON or with the binary tensor data extension (Triton's `binary_tensor_data`).
//!
//! A model's V2 inputs are its ONNX inputs, by name, with their declared shapes (the batch
//! dimension is the rows). Its outputs are its answer: the same outputs, under the same names,
//! that `/invocations` returns, so a classifier's label honours `class_labels` and `threshold`
//! on both routes, and ZipMap's `seq(map)` is a `[N, classes]` FP32 tensor here.

mod request;
mod response;
#[cfg(test)]
mod tests;

pub use request::{decode, text_tensors, Answer, InferRequest, TextTensor, HEADER_LENGTH};
pub use response::{encode, Encoded};

use serde::Serialize;

use crate::model::{ElemType, ModelSignature, OutputPlan, OutputType};

/// The content type of a captured body with binary data, before the JSON object's length:
/// SageMaker's own for Triton's binary+JSON bodies.
pub const CAPTURED_BINARY: &str = "application/vnd.sagemaker-triton.binary+json;json-header-size=";

/// Every datatype the protocol names, for messages that say which one was meant.
const DATATYPES: [&str; 13] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES",
];

/// The protocol's name of an element type mlapp feeds or answers with.
pub fn datatype(elem: ElemType) -> &'static str {
    match elem {
        ElemType::Float32 => "FP32",
        ElemType::Float64 => "FP64",
        ElemType::Int64 => "INT64",
        ElemType::Int32 => "INT32",
        ElemType::Bool => "BOOL",
        ElemType::String => "BYTES",
    }
}

/// A tensor as model metadata describes it: -1 marks a dimension of any size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorMeta<'a> {
    /// Borrowed from the signature: metadata is built per request, with no copies.
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// The inputs a request must send. Any number of rows, unless the model takes exactly k
/// (`rows_fixed`).
pub fn inputs(sig: &ModelSignature, rows_fixed: Option<usize>) -> Vec<TensorMeta<'_>> {
    sig.inputs
        .iter()
        .map(|i| {
            let mut shape = vec![rows_fixed.map_or(-1, |k| k as i64)];
            if i.shape.len() == 2 {
                shape.push(i.width as i64);
            }
            TensorMeta {
                name: &i.name,
                datatype: datatype(i.elem),
                shape,
            }
        })
        .collect()
}

/// The outputs an answer holds: a classifier's two in the graph's order, else the selected
/// outputs in the order the config lists them (`OutputPlan`). Their rows are the request's
/// (`rows_fixed` for a model that takes exactly k).
pub fn outputs<'s>(
    sig: &'s ModelSignature,
    plan: &OutputPlan,
    rows_fixed: Option<usize>,
) -> Vec<TensorMeta<'s>> {
    let rows = rows_fixed.map_or(-1, |k| k as i64);
    // The graph's element type (`signature::elem_name`) under the protocol's name; types
    // mlapp cannot read back fail the model's warm-up before any request.
    let elem_type = |elem: &str| match elem {
        "float32" => "FP32",
        "float64" => "FP64",
        "float16" => "FP16",
        "int64" => "INT64",
        "int32" => "INT32",
        "int16" => "INT16",
        "int8" => "INT8",
        "uint64" => "UINT64",
        "uint32" => "UINT32",
        "uint16" => "UINT16",
        "uint8" => "UINT8",
        "bool" => "BOOL",
        _ => "BYTES",
    };
    let graph = |i: usize| {
        let o = &sig.outputs[i];
        let (datatype, shape) = match &o.ty {
            OutputType::Tensor { elem, shape } => {
                let mut shape = shape.clone();
                if let Some(first) = shape.first_mut() {
                    *first = rows;
                }
                (elem_type(elem), shape)
            }
            // ZipMap's maps: one row of class probabilities each.
            OutputType::SeqMap { .. } | OutputType::Other { .. } => ("FP32", vec![rows, -1]),
        };
        TensorMeta {
            name: &o.name,
            datatype,
            shape,
        }
    };
    match plan {
        OutputPlan::Classifier {
            label,
            probabilities,
            class_labels,
            after,
            ..
        } => {
            let named = !class_labels.is_empty()
                || after.renames()
                || sig.outputs[*label].tensor_elem() == Some("string");
            let label_meta = TensorMeta {
                name: &sig.outputs[*label].name,
                datatype: if named { "BYTES" } else { "INT64" },
                shape: vec![rows],
            };
            let classes = match (&sig.outputs[*probabilities].ty, class_labels.len()) {
                (_, n) if n > 0 => n as i64,
                (OutputType::Tensor { shape, .. }, _) if shape.len() == 2 && shape[1] > 0 => {
                    shape[1]
                }
                _ => -1,
            };
            let top_k = after.shown().and_then(|s| s.top_k);
            let proba_meta = TensorMeta {
                name: &sig.outputs[*probabilities].name,
                datatype: if top_k.is_some() { "BYTES" } else { "FP32" },
                shape: match top_k {
                    Some(k) if classes >= 0 => vec![rows, classes.min(k as i64)],
                    _ => vec![rows, classes],
                },
            };
            if label < probabilities {
                vec![label_meta, proba_meta]
            } else {
                vec![proba_meta, label_meta]
            }
        }
        OutputPlan::Regressor { value, .. } => vec![graph(*value)],
        OutputPlan::Raw { outputs, .. } => outputs.iter().map(|&i| graph(i)).collect(),
    }
}
