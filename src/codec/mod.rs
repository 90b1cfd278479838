//! Request and response formats. Pure functions of bytes and a model signature: nothing here
//! knows about HTTP.

pub mod csv;
pub mod encode;
pub mod frame;
pub mod json;
mod json_fast;
pub mod lines;
pub mod media;
pub mod npy;
pub mod number;
#[cfg(test)]
pub(crate) mod props;
pub mod records;
mod scan;
pub mod v2;

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
    /// A JSON object with a key twice: which value was meant is unknowable, so neither is
    /// taken. `place` says where, when the object is not a record.
    #[error("{}key \"{key}\" appears twice{place}", row.map(|r| format!("row {r}: ")).unwrap_or_default())]
    DuplicateKey {
        row: Option<usize>,
        key: String,
        place: String,
    },
    /// Well-formed, but not the shape the model takes (an .npy of the wrong width, a missing
    /// named input).
    #[error("{0}")]
    Shape(String),
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
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::Shape(_) => "wrong_shape",
        }
    }

    /// The same error for a chunk that starts after `rows` rows of its body, or None when the
    /// error has no row number to move (its text may name a line of the chunk).
    pub fn after_rows(self, rows: usize) -> Option<Self> {
        Some(match self {
            Self::FeatureCount {
                row,
                expected,
                got,
                features,
            } => Self::FeatureCount {
                row: row + rows,
                expected,
                got,
                features,
            },
            Self::Value {
                row,
                column,
                feature,
                expected,
                got,
            } => Self::Value {
                row: row + rows,
                column,
                feature,
                expected,
                got,
            },
            Self::MissingFeature { row, feature } => Self::MissingFeature {
                row: row + rows,
                feature,
            },
            Self::UnknownFeature {
                row,
                name,
                features,
            } => Self::UnknownFeature {
                row: row + rows,
                name,
                features,
            },
            Self::DuplicateKey {
                row: Some(row),
                key,
                place,
            } => Self::DuplicateKey {
                row: Some(row + rows),
                key,
                place,
            },
            _ => return None,
        })
    }

    /// The same error for a piece of a body that follows `rows` records on `lines` lines:
    /// row numbers move by `rows`, a leading "line N" or "CSV line N" by `lines`, and any
    /// other error says where its piece starts.
    pub fn located(self, rows: usize, lines: usize) -> Self {
        if rows == 0 && lines == 0 {
            return self;
        }
        let Self::Syntax { format, detail } = self else {
            let text = self.to_string();
            return self.after_rows(rows).unwrap_or_else(|| {
                Self::Shape(format!("in the records after row {rows}: {text}"))
            });
        };
        let moved = ["CSV line ", "line "].iter().find_map(|prefix| {
            let rest = detail.strip_prefix(prefix)?;
            let digits = rest.find(|c: char| !c.is_ascii_digit())?;
            let n: usize = rest[..digits].parse().ok()?;
            Some(format!("{prefix}{}{}", n + lines, &rest[digits..]))
        });
        let detail = moved.unwrap_or_else(|| format!("in the records after row {rows}: {detail}"));
        Self::Syntax { format, detail }
    }

    pub(crate) fn syntax(format: &'static str, detail: impl Into<String>) -> Self {
        Self::Syntax {
            format,
            detail: detail.into(),
        }
    }
}

/// True when every line of `body` is one record: JSON Lines, and CSV without a header or
/// quotes (a quoted field may hold a newline).
pub fn line_oriented(format: InputFormat, body: &[u8]) -> bool {
    match format {
        InputFormat::JsonLines => true,
        InputFormat::Csv { header } => !header && memchr::memchr(b'"', body).is_none(),
        InputFormat::Json | InputFormat::Npy => false,
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
    // A fixed-batch model takes any number of rows: the engine runs them k at a time.
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_located_in_the_whole_body() {
        let csv = InputFormat::Csv { header: false };
        let err = decode(csv, b"1,2,3\n1,x,3\n", &test_sig::tensor3()).unwrap_err();
        assert!(err
            .located(100, 120)
            .to_string()
            .starts_with("row 102, column 2"));
        let err = decode(
            InputFormat::JsonLines,
            b"[1,2,3]\n\n[1,",
            &test_sig::tensor3(),
        )
        .unwrap_err()
        .located(10, 12);
        assert!(
            err.to_string().starts_with("line 15: invalid JSON"),
            "{err}"
        );
        assert!(err.is_malformed());
        let err = DecodeError::Shape("odd".into()).located(5, 5);
        assert_eq!(err.to_string(), "in the records after row 5: odd");
    }

    #[test]
    fn row_numbers_move_with_the_chunk() {
        let err = decode(
            InputFormat::Csv { header: false },
            b"1,2,3\n1,x,3\n",
            &test_sig::tensor3(),
        )
        .unwrap_err()
        .after_rows(100)
        .unwrap();
        assert!(err.to_string().starts_with("row 102, column 2"), "{err}");
        assert!(DecodeError::Empty.after_rows(1).is_none());
    }
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

    /// A model with one `[N, F]` float input, one feature per name.
    pub fn floats(names: &[String]) -> ModelSignature {
        let cfg = ModelConfig {
            feature_names: names.to_vec(),
            ..Default::default()
        };
        ModelSignature::new(
            vec![InputSpec {
                name: "input".into(),
                elem: ElemType::Float32,
                shape: vec![-1, names.len() as i64],
                width: names.len(),
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
