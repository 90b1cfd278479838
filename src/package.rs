//! `mlapp package MODEL_DIR --rows FILE`: a `model.tar.gz` of the whole model folder (graphs,
//! config, steps' functions, the baseline, warm-up rows) with sample rows and their expected
//! answers in `parity/`, which every later load checks (`engine::parity`). Files linked from
//! elsewhere are packed as the files they point to.
//!
//! The expected answers are the ones given with `--expected` (what the model gave where it
//! was trained, in mlapp's JSON Lines answer format), checked here first; else the ones this
//! mlapp and its ONNX Runtime give now.

use std::io::Write;
use std::path::{Path, PathBuf};

use ort::environment::Environment;

use crate::engine::{self, parity};
use crate::model::ModelError;

#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// The model folder.
    pub model_dir: PathBuf,
    /// Sample rows in a request format (.jsonl, .json or .csv), at most 16 MiB.
    #[arg(long)]
    pub rows: PathBuf,
    /// Their expected answers, one JSON line per row as `Accept: application/jsonlines` gives
    /// them before any `top_k` or `fields` step; default: the answers the model gives here.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// The archive to write.
    #[arg(long, default_value = "model.tar.gz")]
    pub out: PathBuf,
    /// Name of the model config file inside the folder.
    #[arg(long, env = "MLAPP_MODEL_CONFIG", default_value = "mlapp.json")]
    pub model_config: String,
    /// Path of libonnxruntime.so.1.31.1.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the model does not give the answers of {file}: {detail}")]
    Mismatch { file: PathBuf, detail: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("--rows {0}: use a .jsonl, .json or .csv file")]
    RowsFormat(PathBuf),
}

/// What was written.
pub struct Packed {
    pub files: usize,
    pub rows: usize,
}

pub fn package(env: &Environment, args: &PackageArgs) -> Result<Packed, PackageError> {
    let ext = args
        .rows
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .filter(|e| parity::ROWS.contains(&format!("rows.{e}").as_str()))
        .ok_or_else(|| PackageError::RowsFormat(args.rows.clone()))?;
    let (opened, sessions) = engine::open(
        env,
        &args.model_dir,
        &args.model_config,
        1,
        engine::Device::Cpu,
    )?;
    let mut unit = opened.unit(sessions);
    let got = parity::answers(
        &mut unit,
        &opened.signature,
        &opened.plan,
        &args.rows,
        opened.source.config.csv_header,
    )?;
    let expected: Vec<u8> = match &args.expected {
        Some(file) => {
            let want = parity::read_expected(file)?;
            let diffs = parity::differences(&want, &got);
            if !diffs.is_empty() {
                return Err(PackageError::Mismatch {
                    file: file.clone(),
                    detail: parity::describe(&diffs, &args.rows),
                });
            }
            read(file)?
        }
        None => got
            .iter()
            .map(|v| format!("{v}\n"))
            .collect::<String>()
            .into_bytes(),
    };
    let tmp = args.out.with_extension("partial");
    let files = write(
        &args.model_dir,
        &args.out,
        &tmp,
        &read(&args.rows)?,
        &ext,
        &expected,
    )
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, &args.out).map_err(io(&args.out))?;
    Ok(Packed {
        files,
        rows: got.len(),
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PackageError + '_ {
    move |e| PackageError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PackageError> {
    std::fs::read(path).map_err(io(path))
}

/// The folder's files (less any earlier `parity/`, links and the archive itself) and the
/// parity files, gzipped into `tmp`; how many files.
fn write(
    dir: &Path,
    out: &Path,
    tmp: &Path,
    rows: &[u8],
    ext: &str,
    expected: &[u8],
) -> Result<usize, PackageError> {
    let file = std::fs::File::create(tmp).map_err(io(tmp))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let skip = [out.canonicalize().ok(), tmp.canonicalize().ok()];
    let mut files = 0;
    // Links are followed (a model file linked from a DVC or git-annex store is packed as the
    // file it points to); a link loop is an error.
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| PackageError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        if !entry.file_type().is_file()
            || rel.starts_with(parity::DIR)
            || skip.contains(&path.canonicalize().ok())
        {
            continue;
        }
        tar.append_path_with_name(path, rel).map_err(io(path))?;
        files += 1;
    }
    for (name, bytes) in [
        (format!("{}/rows.{ext}", parity::DIR), rows),
        (format!("{}/{}", parity::DIR, parity::EXPECTED), expected),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, &name, bytes)
            .map_err(io(tmp))?;
        files += 1;
    }
    let gz = tar.into_inner().map_err(io(tmp))?;
    let mut file = gz.finish().map_err(io(tmp))?;
    file.flush().map_err(io(tmp))?;
    file.sync_all().map_err(io(tmp))?;
    Ok(files)
}
