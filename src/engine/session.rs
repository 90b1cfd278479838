//! One ONNX Runtime session: how it is built, and one run of a frame through it with every
//! output copied out into owned buffers.

use std::path::Path;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynMapValueType, DynValue, Tensor, ValueType};

use crate::codec::{Column, Frame};
use crate::model::{ModelError, OutputData, OutputTensor, Outputs};

pub fn build_session(
    env: &Environment,
    file: &Path,
    intra_threads: usize,
) -> Result<Session, ModelError> {
    let load_err = |message: String| ModelError::Load {
        path: file.to_path_buf(),
        message,
    };
    let mut builder = Session::builder(env)
        .and_then(|b| {
            b.with_optimization_level(GraphOptimizationLevel::All)
                .map_err(Into::into)
        })
        .and_then(|b| b.with_intra_threads(intra_threads).map_err(Into::into))
        // Spinning threads burn idle CPU; with one intra thread there is nothing to spin for.
        .and_then(|b| {
            b.with_intra_op_spinning(intra_threads > 1)
                .map_err(Into::into)
        })
        .map_err(|e: ort::Error| load_err(e.to_string()))?;
    builder
        .commit_from_file(file)
        .map_err(|e| load_err(e.to_string()))
}

/// One run: the frame in, every output copied out (the outputs borrow the session).
pub fn run(session: &mut Session, frame: Frame) -> Result<Outputs, String> {
    let rows = frame.rows;
    let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(frame.columns.len());
    for (outlet, column) in session.inputs().iter().zip(frame.columns) {
        let width = column.len() / rows.max(1);
        let shape: Vec<i64> = match outlet.dtype().tensor_shape().map(|s| s.len()) {
            Some(1) => vec![rows as i64],
            _ => vec![rows as i64, width as i64],
        };
        let value: DynValue = match column {
            Column::F32(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::F64(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::I64(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::I32(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::Bool(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::Str(v) => Tensor::from_string_array((shape, &v[..])).map(Tensor::into_dyn),
        }
        .map_err(|e| format!("input \"{}\": {e}", outlet.name()))?;
        inputs.push((outlet.name().to_string(), value.into()));
    }
    let specs: Vec<(String, ValueType)> = session
        .outputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect();
    let out = session.run(inputs).map_err(|e| e.to_string())?;
    let mut tensors = Vec::with_capacity(specs.len());
    for (name, ty) in specs {
        let value = &out[name.as_str()];
        let fail = |e: ort::Error| format!("output \"{name}\": {e}");
        let (shape, data) = match ty {
            ValueType::Sequence(_) => {
                let maps = value
                    .try_extract_sequence::<DynMapValueType>()
                    .map_err(fail)?;
                let is_str_key = matches!(&ty, ValueType::Sequence(inner)
                    if matches!(inner.as_ref(), ValueType::Map { key, .. } if *key == ort::value::TensorElementType::String));
                let data = if is_str_key {
                    OutputData::MapStr(
                        maps.iter()
                            .map(|m| m.try_extract_key_values::<String, f32>())
                            .collect::<Result<_, _>>()
                            .map_err(fail)?,
                    )
                } else {
                    OutputData::MapI64(
                        maps.iter()
                            .map(|m| m.try_extract_key_values::<i64, f32>())
                            .collect::<Result<_, _>>()
                            .map_err(fail)?,
                    )
                };
                (vec![maps.len()], data)
            }
            ValueType::Tensor { ty, .. } => {
                use ort::value::TensorElementType as T;
                macro_rules! copy {
                    ($t:ty, $variant:ident) => {{
                        let (s, d) = value.try_extract_tensor::<$t>().map_err(fail)?;
                        (dims(s), OutputData::$variant(d.to_vec()))
                    }};
                }
                match ty {
                    T::Float32 => copy!(f32, F32),
                    T::Float64 => copy!(f64, F64),
                    T::Int64 => copy!(i64, I64),
                    T::Int32 => copy!(i32, I32),
                    T::Bool => copy!(bool, Bool),
                    T::String => {
                        let (s, d) = value.try_extract_strings().map_err(fail)?;
                        (dims(s), OutputData::Str(d))
                    }
                    other => {
                        return Err(format!("output \"{name}\" has unsupported type {other:?}"))
                    }
                }
            }
            other => return Err(format!("output \"{name}\" has unsupported type {other}")),
        };
        tensors.push(OutputTensor { name, shape, data });
    }
    Ok(Outputs { rows, tensors })
}

fn dims(s: &[i64]) -> Vec<usize> {
    s.iter().map(|&d| d.max(0) as usize).collect()
}
