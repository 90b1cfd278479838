//! Request and response formats. Pure functions of bytes and a model signature: nothing here
//! knows about HTTP.

pub mod csv;
pub mod encode;
pub mod frame;
pub mod json;
mod json_fast;
pub mod media;
pub mod npy;
pub mod number;

pub use encode::encode;
pub use frame::{Column, Frame};
pub use media::{InputFormat, OutputFormat};

use crate::model::ModelSignature;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not valid in its own format (bad quoting, bad JSON, a truncated .npy).
    #[error("{detail}")]
    Syntax {
        format: &'static str,
        detail: String,
    },
    #[error("the request body holds no rows")]
    Empty,
    #[error("row {row}: expected {expected} values (one per feature: {features}), got {got}")]
    FeatureCount {
        row: usize,
        expected: usize,
        got: usize,
        features: String,
    },
    #[error("row {row}, column {column} (feature \"{feature}\"): expected {expected}, got {got}")]
    Value {
        row: usize,
        column: usize,
        feature: String,
        expected: &'static str,
        got: String,
    },
    #[error("row {row}: missing feature \"{feature}\"")]
    MissingFeature { row: usize, feature: String },
    #[error("row {row}: unknown feature \"{name}\"; the model takes: {features}")]
    UnknownFeature {
        row: usize,
        name: String,
        features: String,
    },
    /// Well-formed, but not the shape the model takes (an .npy of the wrong width, a missing
    /// named input).
    #[error("{0}")]
    Shape(String),
    #[error("the model takes exactly {expected} rows per request, got {got}")]
    FixedBatch { expected: usize, got: usize },
}

impl DecodeError {
    /// Syntax errors are the client's malformed body (400); the rest are well-formed bodies
    /// the model cannot take (422).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::Syntax { .. } | Self::Empty)
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Syntax { format, .. } => match *format {
                "csv" => "invalid_csv",
                "jsonlines" => "invalid_jsonlines",
                "npy" => "invalid_npy",
                _ => "invalid_json",
            },
            Self::Empty => "empty_body",
            Self::FeatureCount { .. } => "wrong_feature_count",
            Self::Value { .. } => "invalid_value",
            Self::MissingFeature { .. } => "missing_feature",
            Self::UnknownFeature { .. } => "unknown_feature",
            Self::Shape(_) | Self::FixedBatch { .. } => "wrong_shape",
        }
    }

    pub(crate) fn syntax(format: &'static str, detail: impl Into<String>) -> Self {
        Self::Syntax {
            format,
            detail: detail.into(),
        }
    }
}

/// Decodes a whole request body into the frame the model runs on.
pub fn decode(
    format: InputFormat,
    body: &[u8],
    sig: &ModelSignature,
) -> Result<Frame, DecodeError> {
    let frame = match format {
        InputFormat::Csv { header } => csv::decode(body, sig, header)?,
        InputFormat::Json => json::decode(body, sig)?,
        InputFormat::JsonLines => json::decode_lines(body, sig)?,
        InputFormat::Npy => npy::decode(body, sig)?,
    };
    if frame.rows == 0 {
        return Err(DecodeError::Empty);
    }
    if let Some(n) = sig.fixed_batch {
        if frame.rows != n {
            return Err(DecodeError::FixedBatch {
                expected: n,
                got: frame.rows,
            });
        }
    }
    Ok(frame)
}

#[cfg(test)]
pub(crate) mod test_sig {
    use crate::model::{ElemType, InputSpec, ModelConfig, ModelSignature};

    /// A model with one `[N, 3]` float input.
    pub fn tensor3() -> ModelSignature {
        let cfg = ModelConfig {
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            ..Default::default()
        };
        ModelSignature::new(
            vec![InputSpec {
                name: "input".into(),
                elem: ElemType::Float32,
                shape: vec![-1, 3],
                width: 3,
            }],
            vec![],
            None,
            &cfg,
        )
        .unwrap()
    }

    /// A pipeline-like model: a string column, an int64 column and a float column.
    pub fn mixed() -> ModelSignature {
        let input = |name: &str, elem| InputSpec {
            name: name.into(),
            elem,
            shape: vec![-1, 1],
            width: 1,
        };
        ModelSignature::new(
            vec![
                input("city", ElemType::String),
                input("tier", ElemType::Int64),
                input("hours", ElemType::Float32),
            ],
            vec![],
            None,
            &ModelConfig::default(),
        )
        .unwrap()
    }
}
