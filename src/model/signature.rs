//! What a model takes and gives, read once from the ONNX Runtime session.
//!
//! Requests are decoded against the *features* of a signature: the model's input columns laid
//! end to end. A model with one `[N, F]` input has F features; a scikit-learn pipeline exported
//! by skl2onnx has one `[N, 1]` input per raw column, so each input is one feature.

use std::collections::HashMap;
use std::fmt;

use ort::session::Session;
use ort::value::TensorElementType;
use ort::value::ValueType;
use serde::Serialize;

use super::config::ModelConfig;
use super::ModelError;

/// Element types mlapp can build input tensors of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    Float32,
    Float64,
    Int64,
    Int32,
    Bool,
    String,
}

impl ElemType {
    fn from_ort(ty: TensorElementType) -> Option<Self> {
        Some(match ty {
            TensorElementType::Float32 => Self::Float32,
            TensorElementType::Float64 => Self::Float64,
            TensorElementType::Int64 => Self::Int64,
            TensorElementType::Int32 => Self::Int32,
            TensorElementType::Bool => Self::Bool,
            TensorElementType::String => Self::String,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::Int64 => "int64",
            Self::Int32 => "int32",
            Self::Bool => "bool",
            Self::String => "string",
        }
    }

    pub fn is_numeric(self) -> bool {
        !matches!(self, Self::String)
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InputSpec {
    pub name: String,
    pub elem: ElemType,
    /// The declared shape; -1 marks a dynamic dimension.
    pub shape: Vec<i64>,
    /// Features per row: 1 for `[N]` and `[N, 1]`, F for `[N, F]`.
    pub width: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Feature {
    pub name: String,
    pub input: usize,
    pub elem: ElemType,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputType {
    Tensor {
        elem: String,
        shape: Vec<i64>,
    },
    /// ZipMap's `seq(map(key, float))`: one map of class → probability per row.
    SeqMap {
        key: String,
    },
    Other {
        description: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputSpec {
    pub name: String,
    #[serde(flatten)]
    pub ty: OutputType,
}

impl OutputSpec {
    pub fn tensor_elem(&self) -> Option<&str> {
        match &self.ty {
            OutputType::Tensor { elem, .. } => Some(elem),
            _ => None,
        }
    }

    pub fn tensor_rank(&self) -> Option<usize> {
        match &self.ty {
            OutputType::Tensor { shape, .. } => Some(shape.len()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelSignature {
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub features: Vec<Feature>,
    /// A batch dimension fixed in the graph (`[1, F]` exports): the engine runs this many rows
    /// at a time (`engine::session::run`), so requests may still have any number of rows.
    pub fixed_batch: Option<usize>,
    #[serde(skip)]
    by_name: HashMap<String, usize>,
}

impl ModelSignature {
    pub fn from_session(session: &Session, config: &ModelConfig) -> Result<Self, ModelError> {
        let outputs = ports(session.outputs()).iter().map(output_spec).collect();
        Self::from_ports(&ports(session.inputs()), outputs, config)
    }

    /// The signature of a graph (or of several, wired together) that takes `inputs` and
    /// gives `outputs`.
    pub fn from_ports(
        ports: &[Port],
        outputs: Vec<OutputSpec>,
        config: &ModelConfig,
    ) -> Result<Self, ModelError> {
        let mut inputs = Vec::new();
        let mut fixed_batch = None;
        for (name, dtype) in ports {
            let name = name.clone();
            let ValueType::Tensor { ty, shape, .. } = dtype else {
                return Err(ModelError::Unsupported(format!(
                    "input \"{name}\" is a {dtype}, mlapp feeds tensors only"
                )));
            };
            let elem = ElemType::from_ort(*ty).ok_or_else(|| {
                ModelError::Unsupported(format!("input \"{name}\" has element type {ty:?}"))
            })?;
            let dims: Vec<i64> = shape.iter().copied().collect();
            let width = match dims.as_slice() {
                [_] => 1,
                [_, f] if *f > 0 => *f as usize,
                [_, _] if ports.len() == 1 && !config.feature_names.is_empty() => {
                    config.feature_names.len()
                }
                [_, _] => {
                    return Err(ModelError::Unsupported(format!(
                        "input \"{name}\" has a dynamic feature dimension {dims:?}; \
                         list the features in the model config's \"feature_names\""
                    )))
                }
                _ => {
                    return Err(ModelError::Unsupported(format!(
                    "input \"{name}\" has shape {dims:?}; mlapp serves inputs shaped [N] or [N, F]"
                )))
                }
            };
            if let Some(&n) = dims.first() {
                if n > 0 {
                    fixed_batch = Some(n as usize);
                }
            }
            inputs.push(InputSpec {
                name,
                elem,
                shape: dims,
                width,
            });
        }
        if inputs.is_empty() {
            return Err(ModelError::Unsupported("the model has no inputs".into()));
        }
        Self::new(inputs, outputs, fixed_batch, config)
    }

    pub fn new(
        inputs: Vec<InputSpec>,
        outputs: Vec<OutputSpec>,
        fixed_batch: Option<usize>,
        config: &ModelConfig,
    ) -> Result<Self, ModelError> {
        let mut features = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            for c in 0..input.width {
                let name = if input.width == 1 {
                    input.name.clone()
                } else {
                    format!("{}_{c}", input.name)
                };
                features.push(Feature {
                    name,
                    input: i,
                    elem: input.elem,
                });
            }
        }
        if !config.feature_names.is_empty() {
            if config.feature_names.len() != features.len() {
                return Err(ModelError::Config(format!(
                    "feature_names lists {} names but the model takes {} features",
                    config.feature_names.len(),
                    features.len()
                )));
            }
            for (f, name) in features.iter_mut().zip(&config.feature_names) {
                f.name.clone_from(name);
            }
        }
        let mut by_name = HashMap::with_capacity(features.len());
        for (i, f) in features.iter().enumerate() {
            if by_name.insert(f.name.clone(), i).is_some() {
                return Err(ModelError::Config(format!(
                    "feature name \"{}\" appears twice",
                    f.name
                )));
            }
        }
        Ok(Self {
            inputs,
            outputs,
            features,
            fixed_batch,
            by_name,
        })
    }

    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// A short list of feature names for error messages, so a 2 KB error budget is not spent
    /// on a 500-feature model.
    pub fn feature_list(&self) -> String {
        const SHOWN: usize = 12;
        let mut names: Vec<&str> = self
            .features
            .iter()
            .take(SHOWN)
            .map(|f| f.name.as_str())
            .collect();
        if self.features.len() > SHOWN {
            names.push("...");
        }
        names.join(", ")
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }
}

/// A graph's input or output: its name and type, as ONNX Runtime reads them.
pub type Port = (String, ValueType);

pub fn ports(outlets: &[ort::value::Outlet]) -> Vec<Port> {
    outlets
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect()
}

pub fn output_spec((name, ty): &Port) -> OutputSpec {
    OutputSpec {
        name: name.clone(),
        ty: output_type(ty),
    }
}

fn output_type(ty: &ValueType) -> OutputType {
    match ty {
        ValueType::Tensor { ty, shape, .. } => OutputType::Tensor {
            elem: elem_name(*ty),
            shape: shape.iter().copied().collect(),
        },
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map { key, value } if *value == TensorElementType::Float32 => {
                OutputType::SeqMap {
                    key: elem_name(*key),
                }
            }
            other => OutputType::Other {
                description: format!("sequence of {other}"),
            },
        },
        other => OutputType::Other {
            description: other.to_string(),
        },
    }
}

fn elem_name(ty: TensorElementType) -> String {
    match ElemType::from_ort(ty) {
        Some(e) => e.name().to_string(),
        None => format!("{ty:?}").to_lowercase(),
    }
}
