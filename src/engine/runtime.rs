//! Finding and loading ONNX Runtime's shared library, once per process.
//!
//! mlapp links nothing at build time (`ort`'s `load-dynamic`): the library is dlopened by path
//! at start-up, so the same binary runs with the CPU or the GPU build of ONNX Runtime.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

pub const ORT_VERSION: &str = "1.31.1";
const LIB_NAMES: [&str; 2] = ["libonnxruntime.so.1.31.1", "libonnxruntime.so"];

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime {ORT_VERSION} was not found; looked in: {searched}.\n\
         Install it with `scripts/install-onnxruntime.sh` (fetches the onnxruntime=={ORT_VERSION} \
         wheel from PyPI into .ort/lib), or point --ort-dylib / ORT_DYLIB_PATH at \
         libonnxruntime.so.{ORT_VERSION}"
    )]
    NotFound { searched: String },
    #[error("ONNX Runtime at {path} could not be loaded: {message}")]
    Load { path: PathBuf, message: String },
}

/// Where mlapp looks when no path is given, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // The folder scripts/install-onnxruntime.sh fills, for binaries built from this checkout.
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort/lib"));
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("lib"));
        dirs.push(exe_dir);
    }
    dirs.push(PathBuf::from("/opt/onnxruntime/lib"));
    dirs
}

pub fn find_dylib(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    if let Some(p) = explicit {
        // ort resolves a relative path against the executable's folder; keep that rule but
        // check the file exists first so the error names it.
        let resolved = if p.is_relative() && !p.exists() {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join(p)))
                .unwrap_or_else(|| p.to_path_buf())
        } else {
            p.to_path_buf()
        };
        if resolved.is_file() {
            return Ok(resolved);
        }
        return Err(RuntimeError::NotFound {
            searched: format!("{} (from --ort-dylib / ORT_DYLIB_PATH)", p.display()),
        });
    }
    let dirs = search_dirs();
    for dir in &dirs {
        for name in LIB_NAMES {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(RuntimeError::NotFound {
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

static ENVIRONMENT: OnceLock<(Environment, PathBuf)> = OnceLock::new();

/// Loads ONNX Runtime and builds the process's one environment (ORT allows only one).
/// Later calls return the first result whatever path they pass.
pub fn init(explicit: Option<&Path>) -> Result<&'static (Environment, PathBuf), RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = find_dylib(explicit)?;
    let load_err = |message: String| RuntimeError::Load {
        path: path.clone(),
        message,
    };
    let env = ort::init_from(&path)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("mlapp")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    env.set_log_level(ort::logging::LogLevel::Warning);
    log::info!("ONNX Runtime loaded from {}", path.display());
    Ok(ENVIRONMENT.get_or_init(|| (env, path)))
}
