//! An inference response: the answer's tensors as JSON, or (binary tensor data extension) a
//! JSON object followed by the bytes of the outputs asked for as binary.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::request::Answer;
use super::{datatype, TensorMeta};
use crate::codec::Column;
use crate::model::output::probabilities_of;
use crate::model::{Label, OutputData, Predictions};

/// A response body; `header_len` is the length of its JSON object when binary data follows.
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

/// The values as the binary extension lays them out: little-endian, row-major, BYTES as a
/// 4-byte length and the bytes.
fn write_binary(data: &Column, out: &mut Vec<u8>) {
    match data {
        Column::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Column::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Column::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Column::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Column::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Column::Str(v) => {
            for s in v {
                // Strings over 4 GiB cannot come out of a model mlapp serves.
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: Column,
    /// Its bytes follow the JSON object: the size, in place of `data`.
    binary_size: Option<usize>,
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("datatype", datatype(self.data.elem()))?;
        m.serialize_entry("shape", &self.shape)?;
        if let Some(n) = self.binary_size {
            m.serialize_entry("parameters", &serde_json::json!({"binary_data_size": n}))?;
            return m.end();
        }
        match &self.data {
            Column::F32(v) => m.serialize_entry("data", v)?,
            Column::F64(v) => m.serialize_entry("data", v)?,
            Column::I64(v) => m.serialize_entry("data", v)?,
            Column::I32(v) => m.serialize_entry("data", v)?,
            Column::Bool(v) => m.serialize_entry("data", v)?,
            Column::Str(v) => m.serialize_entry("data", v)?,
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// The `fields` step's constants: the same for every row, so the answer's, not a tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a serde_json::Map<String, serde_json::Value>>,
    outputs: &'a [Tensor],
}

/// The answer's tensors, as `metas` (`super::outputs`) lists them for the model.
fn tensors(p: Predictions, metas: &[TensorMeta<'_>]) -> Result<Vec<Tensor>, String> {
    let tensor = |name: &str, shape, data| Tensor {
        name: name.to_string(),
        shape,
        data,
        binary_size: None,
    };
    Ok(match p {
        Predictions::Classifier {
            labels,
            classes,
            probabilities,
            shown,
        } => {
            let rows = labels.len();
            let (Some(label_meta), Some(proba_meta)) = (
                metas.iter().find(|m| m.shape.len() == 1),
                metas.iter().find(|m| m.shape.len() == 2),
            ) else {
                return Err("a classifier's outputs are a label and its probabilities".into());
            };
            let labels = if label_meta.datatype == "BYTES" {
                Column::Str(
                    labels
                        .into_iter()
                        .map(|l| match l {
                            Label::Str(s) => s,
                            Label::Int(i) => i.to_string(),
                        })
                        .collect(),
                )
            } else {
                Column::I64(
                    labels
                        .into_iter()
                        .map(|l| match l {
                            Label::Int(i) => Ok(i),
                            Label::Str(s) => Err(format!("label {s:?} where INT64 labels belong")),
                        })
                        .collect::<Result<_, _>>()?,
                )
            };
            let label = tensor(label_meta.name, vec![rows], labels);
            let c = classes.len();
            let proba = match shown.as_deref().and_then(|s| s.top_k.map(|k| (s, k))) {
                // Triton's classification extension: `<value>:<index>:<label>`, most probable
                // first, so tritonclient's users read it as they read Triton's.
                Some((s, k)) => {
                    let mut top = Vec::with_capacity(rows * k.min(c));
                    for r in 0..rows {
                        let row = probabilities
                            .get(r * c..(r + 1) * c)
                            .ok_or("the probabilities do not cover every row")?;
                        top.extend(
                            s.top(row)
                                .into_iter()
                                .map(|i| format!("{}:{i}:{}", row[i], classes[i])),
                        );
                    }
                    tensor(proba_meta.name, vec![rows, k.min(c)], Column::Str(top))
                }
                None => tensor(proba_meta.name, vec![rows, c], Column::F32(probabilities)),
            };
            match metas.first() == Some(label_meta) {
                true => vec![label, proba],
                false => vec![proba, label],
            }
        }
        Predictions::Regressor {
            values, float32, ..
        } => {
            let [meta] = metas else {
                return Err(format!(
                    "a regressor answers with 1 output, not {}",
                    metas.len()
                ));
            };
            let rows = values.len();
            let shape = match meta.shape.len() {
                2 => vec![rows, 1],
                _ => vec![rows],
            };
            let data = match float32 {
                true => Column::F32(values.into_iter().map(|v| v as f32).collect()),
                false => Column::F64(values),
            };
            vec![tensor(meta.name, shape, data)]
        }
        Predictions::Raw { rows, tensors, .. } => tensors
            .into_iter()
            .map(|t| {
                let (shape, data) = match t.data {
                    OutputData::F32(v) => (t.shape, Column::F32(v)),
                    OutputData::F64(v) => (t.shape, Column::F64(v)),
                    OutputData::I64(v) => (t.shape, Column::I64(v)),
                    OutputData::I32(v) => (t.shape, Column::I32(v)),
                    OutputData::Bool(v) => (t.shape, Column::Bool(v)),
                    OutputData::Str(v) => (t.shape, Column::Str(v)),
                    // ZipMap's maps: a [rows, classes] tensor in the first row's class
                    // order, as a classifier's probabilities are read.
                    OutputData::MapI64(_) | OutputData::MapStr(_) => {
                        let (classes, probs) = probabilities_of(&t, rows)?;
                        (vec![rows, classes.len()], Column::F32(probs))
                    }
                };
                Ok(Tensor {
                    name: t.name,
                    shape,
                    data,
                    binary_size: None,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

/// Encodes the answer to `req`. `metas` are the model's V2 outputs (`super::outputs`).
pub fn encode(
    predictions: Predictions,
    metas: &[TensorMeta<'_>],
    req: &Answer,
    model_name: &str,
    model_version: &str,
) -> Result<Encoded, String> {
    // Held past `tensors`, which takes the predictions, for the answer to borrow.
    let shown = predictions.shown().cloned();
    let parameters = shown
        .as_deref()
        .map(|s| &s.fields)
        .filter(|f| !f.is_empty());
    let mut all = tensors(predictions, metas)?;
    let mut out: Vec<Tensor> = match &req.outputs {
        None => {
            for t in &mut all {
                t.binary_size = req.binary_default.then_some(0);
            }
            all
        }
        Some(asked) => asked
            .iter()
            .filter_map(|(name, binary)| {
                let k = all.iter().position(|t| &t.name == name)?;
                let mut t = all.swap_remove(k);
                // An output's own binary_data wins over the request's binary_data_output.
                t.binary_size = binary.unwrap_or(req.binary_default).then_some(0);
                Some(t)
            })
            .collect(),
    };
    let mut binary = Vec::new();
    for t in &mut out {
        if let Some(size) = &mut t.binary_size {
            let before = binary.len();
            write_binary(&t.data, &mut binary);
            *size = binary.len() - before;
        }
    }
    let response = Response {
        model_name,
        model_version,
        id: req.id.as_deref(),
        parameters,
        outputs: &out,
    };
    let mut body = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
    let header_len =
        (!binary.is_empty() || out.iter().any(|t| t.binary_size.is_some())).then_some(body.len());
    body.extend_from_slice(&binary);
    Ok(Encoded { body, header_len })
}
