//! The optional model config file (`mlapp.json`) that sits beside the model.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::pipeline::{Graphs, Steps};

/// Everything is optional: a folder with one `.onnx` file and no config file serves as is.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model's name in metrics and on the Open Inference Protocol's routes
    /// (`/v2/models/{name}`); default: the model folder's name. In multi-model mode the
    /// name a model is loaded as wins.
    #[serde(default)]
    pub name: Option<String>,
    /// The model file, relative to the model folder, when the folder holds more than one.
    #[serde(default)]
    pub model_file: Option<String>,
    /// Several graphs served as one model: a chain or an ensemble (`pipeline::Graphs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphs: Option<Graphs>,
    /// Names of the features in input order (for a model with one `[N, F]` input these name
    /// the F columns; JSON records and CSV headers are matched against them).
    #[serde(default)]
    pub feature_names: Vec<String>,
    /// Class names in the order of the probability columns. Integer labels 0..C-1 are
    /// reported as these names.
    #[serde(default)]
    pub class_labels: Vec<String>,
    /// Outputs to return, by name (default: all, or the classifier/regressor pair found).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Binary classifiers: predict the second class when its probability is >= this value.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// CSV bodies start with a header row even when the Content-Type does not say
    /// `header=present`.
    #[serde(default)]
    pub csv_header: bool,
    /// Rows to warm up with, relative to the model folder (`.csv`, `.json` or `.jsonl`, in
    /// the request formats). Default: `warmup.jsonl`, `warmup.json` or `warmup.csv` when the
    /// folder has one, else made-up rows.
    #[serde(default)]
    pub warmup_file: Option<String>,
    /// Self-made functions around the graph (`pipeline`): steps on the rows before it and
    /// on its answer after.
    #[serde(default, skip_serializing_if = "Steps::is_empty")]
    pub steps: Steps,
}

impl ModelConfig {
    pub fn read(path: &Path) -> Result<Option<Self>, ModelError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ModelError::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        if let Some(name) = config.name.as_deref() {
            if !crate::registry::repository::valid_name(name) {
                return Err(ModelError::Config(format!(
                    "{}: name {name:?} is not a valid name: use letters, digits, '.', '_' and '-' (at most 256)",
                    path.display()
                )));
            }
        }
        if let Some(t) = config.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(ModelError::Config(format!(
                    "{}: threshold must be between 0 and 1, got {t}",
                    path.display()
                )));
            }
        }
        Ok(Some(config))
    }
}
