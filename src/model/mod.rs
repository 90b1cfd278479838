//! Model artifacts: where the model file is, its config, its signature and its output plan.

pub mod cache;
pub mod config;
pub mod fetch;
pub mod output;
pub mod signature;

use std::path::{Component, Path, PathBuf};

pub use config::ModelConfig;
pub use output::{Label, OutputData, OutputPlan, OutputTensor, Outputs, Predictions};
pub use signature::{
    output_spec, ports, ElemType, Feature, InputSpec, ModelSignature, OutputSpec, OutputType, Port,
};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    NotFound(String),
    #[error("model config: {0}")]
    Config(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("ONNX Runtime could not load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("warm-up run failed: {0}")]
    Warmup(String),
    #[error("parity check failed: {0}")]
    Parity(String),
    #[error("{0}")]
    Device(String),
}

/// A model file and its config, found in a model folder.
#[derive(Clone, Debug)]
pub struct ModelSource {
    pub dir: PathBuf,
    /// The graph file (of several, the last listed).
    pub file: PathBuf,
    /// Every graph file of a chain or an ensemble, as listed; empty for one graph.
    pub graphs: Vec<PathBuf>,
    pub config: ModelConfig,
    /// The config file, when the folder has one.
    pub config_file: Option<PathBuf>,
}

/// Finds the model in `dir`: the file the config names, else the one `*.onnx` there.
/// Only reads: the folder is read-only on SageMaker.
pub fn locate(dir: &Path, config_name: &str) -> Result<ModelSource, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::NotFound(format!(
            "model folder {} does not exist or is not a folder",
            dir.display()
        )));
    }
    let config_path = dir.join(config_name);
    let found = ModelConfig::read(&config_path)?;
    let config_file = found.is_some().then_some(config_path);
    let config = found.unwrap_or_default();
    let mut graphs = Vec::new();
    if let Some(g) = &config.graphs {
        if config.model_file.is_some() {
            return Err(ModelError::Config(
                "give either model_file or graphs, not both".into(),
            ));
        }
        g.check().map_err(ModelError::Config)?;
        for name in g.files() {
            graphs.push(inside(dir, "a graph of graphs", name, config_name)?);
        }
    }
    let file = match (&config.model_file, graphs.last()) {
        (_, Some(last)) => last.clone(),
        (Some(name), None) => inside(dir, "model_file", name, config_name)?,
        (None, None) => {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| ModelError::NotFound(format!("cannot list {}: {e}", dir.display())))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "onnx"))
                .collect();
            found.sort();
            match found.len() {
                0 => {
                    return Err(ModelError::NotFound(format!(
                        "no .onnx model file in {}",
                        dir.display()
                    )))
                }
                1 => found.remove(0),
                _ => {
                    let names: Vec<String> = found
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect();
                    return Err(ModelError::NotFound(format!(
                        "{} holds several models ({}); name one as \"model_file\" in {config_name}",
                        dir.display(),
                        names.join(", ")
                    )));
                }
            }
        }
    };
    Ok(ModelSource {
        dir: dir.to_path_buf(),
        file,
        graphs,
        config,
        config_file,
    })
}

/// The file `name` (`what` in the config) inside the model folder.
pub(crate) fn inside(
    dir: &Path,
    what: &str,
    name: &str,
    config_name: &str,
) -> Result<PathBuf, ModelError> {
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ModelError::Config(format!(
            "{what} \"{name}\" must be a path inside the model folder"
        )));
    }
    let file = dir.join(rel);
    if !file.is_file() {
        return Err(ModelError::NotFound(format!(
            "{config_name} names {what} \"{name}\", but {} does not exist",
            file.display()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_folder_is_named() {
        let err = locate(Path::new("/nonexistent/model"), "mlapp.json").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    }

    #[test]
    fn two_models_without_config_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("b.onnx"), b"x").unwrap();
        let err = locate(dir.path(), "mlapp.json").unwrap_err().to_string();
        assert!(err.contains("a.onnx, b.onnx"), "{err}");
        std::fs::write(
            dir.path().join("mlapp.json"),
            br#"{"model_file": "b.onnx"}"#,
        )
        .unwrap();
        let src = locate(dir.path(), "mlapp.json").unwrap();
        assert!(src.file.ends_with("b.onnx"));
    }

    #[test]
    fn model_file_cannot_escape_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mlapp.json"),
            br#"{"model_file": "../x.onnx"}"#,
        )
        .unwrap();
        let err = locate(dir.path(), "mlapp.json").unwrap_err().to_string();
        assert!(err.contains("inside the model folder"), "{err}");
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("mlapp.json"), br#"{"treshold": 0.5}"#).unwrap();
        let err = locate(dir.path(), "mlapp.json").unwrap_err().to_string();
        assert!(err.contains("treshold"), "{err}");
    }
}
