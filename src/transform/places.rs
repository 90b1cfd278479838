//! Where a transform's inputs are and its outputs go: local files and folders, or S3 objects
//! and prefixes. Every input `x` gives `x.out` at the same relative place under the output.

use std::fmt;
use std::path::{Path, PathBuf};

use super::TransformError;
use crate::storage::{Listing, S3Store, S3Uri, StorageError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Local(PathBuf),
    S3(S3Uri),
}

impl Place {
    pub fn parse(text: &str) -> Result<Place, StorageError> {
        Ok(match S3Uri::parse(text) {
            Some(uri) => Place::S3(uri?),
            None => Place::Local(PathBuf::from(text)),
        })
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Place::S3(_))
    }

    /// The place `rel` (a `/`-separated relative path) names under this folder or prefix.
    fn join(&self, rel: &str) -> Place {
        match self {
            Place::Local(dir) => Place::Local(dir.join(rel)),
            Place::S3(uri) => Place::S3(uri.join(rel)),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Local(p) => write!(f, "{}", p.display()),
            Place::S3(u) => write!(f, "{u}"),
        }
    }
}

/// One input and the output it gives.
#[derive(Debug)]
pub struct Item {
    pub input: Place,
    pub output: Place,
    pub size: u64,
}

/// Every input under `input` (a file, folder, object or prefix), in order, with its output.
pub async fn plan(
    store: Option<&S3Store>,
    input: &Place,
    output: &Place,
) -> Result<Vec<Item>, TransformError> {
    let found = match input {
        Place::Local(path) => list_local(path)?,
        Place::S3(uri) => {
            let store = store.ok_or_else(|| TransformError::Config("no S3 client".into()))?;
            list_s3(store, uri).await?
        }
    };
    found
        .into_iter()
        .map(|(rel, at, size)| {
            let rel = rel.trim_start_matches('/');
            // A key such as `a/../../x` must not place an output outside the output folder.
            if !output.is_s3() && !crate::storage::plain_relative(rel) {
                return Err(TransformError::Config(format!(
                    "{at}: its output would be written outside {output}"
                )));
            }
            Ok(Item {
                output: output.join(&format!("{rel}.out")),
                input: at,
                size,
            })
        })
        .collect()
}

/// Whether `place` exists: a finished output (outputs appear only once complete).
pub async fn exists(store: Option<&S3Store>, place: &Place) -> Result<bool, StorageError> {
    match (place, store) {
        (Place::Local(p), _) => Ok(p.exists()),
        (Place::S3(uri), Some(store)) => Ok(store.head(uri).await?.is_some()),
        (Place::S3(_), None) => Err(StorageError::Invalid("no S3 client".into())),
    }
}

/// `(relative path, place, size)` of each file; a lone file's relative path is its name.
fn list_local(input: &Path) -> Result<Vec<(String, Place, u64)>, TransformError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TransformError::Io { path, source }
    };
    let meta = std::fs::metadata(input).map_err(io(input))?;
    if meta.is_file() {
        let name = input.file_name().unwrap_or_default().to_string_lossy();
        return Ok(vec![(
            name.into_owned(),
            Place::Local(input.to_path_buf()),
            meta.len(),
        )]);
    }
    // Links are followed, to files (an input folder of links to data elsewhere) and folders;
    // a link to a folder above it is an error, not a walk for ever.
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(input).follow_links(true).min_depth(1) {
        let entry = entry.map_err(|e| walk_error(input, e))?;
        if entry.file_type().is_file() {
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| walk_error(input, e))?;
            let rel = path.strip_prefix(input).unwrap_or(path);
            let rel = rel.to_string_lossy().into_owned();
            files.push((rel, Place::Local(path.to_path_buf()), meta.len()));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The shared walk error, as a transform error: a loop is the input's fault (a usage error).
fn walk_error(input: &Path, e: walkdir::Error) -> TransformError {
    match crate::storage::walk_error(input, e) {
        StorageError::Invalid(why) => TransformError::Config(why),
        StorageError::Io { path, source } => TransformError::Io { path, source },
        other => TransformError::Storage(other),
    }
}

/// The object the URI names, else every object under it as a folder.
async fn list_s3(
    store: &S3Store,
    uri: &S3Uri,
) -> Result<Vec<(String, Place, u64)>, TransformError> {
    Ok(match store.object_or_prefix(uri).await? {
        Listing::Object(meta) => {
            let name = uri.key.rsplit('/').next().unwrap_or(&uri.key).to_string();
            vec![(name, Place::S3(uri.clone()), meta.size)]
        }
        Listing::Prefix { prefix, objects } => objects
            .into_iter()
            .map(|o| {
                let rel = o.key.strip_prefix(&prefix).unwrap_or(&o.key).to_string();
                let at = Place::S3(S3Uri {
                    bucket: uri.bucket.clone(),
                    key: o.key,
                });
                (rel, at, o.size)
            })
            .collect(),
    })
}
