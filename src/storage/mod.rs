//! Where models come from and outputs go: local paths and S3 (through `aws-sdk-s3`), and
//! safe unpacking of model archives. Nothing here knows about HTTP.

pub mod archive;
mod s3;

use std::fmt;
use std::path::{Path, PathBuf};

pub use archive::{ArchiveError, Limits};
pub(crate) use s3::hex;
pub use s3::{Listing, S3Options, S3Store};

/// A parsed `s3://bucket/key` (the key may be a prefix, empty for the whole bucket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket[/key]`; None when `uri` is not an S3 URI at all.
    pub fn parse(uri: &str) -> Option<Result<Self, StorageError>> {
        let rest = uri.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(StorageError::Invalid(format!(
                "{uri}: an S3 URI names a bucket: s3://bucket/key"
            ))));
        }
        Some(Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }))
    }

    pub fn join(&self, name: &str) -> Self {
        let sep = if self.key.is_empty() || self.key.ends_with('/') {
            ""
        } else {
            "/"
        };
        Self {
            bucket: self.bucket.clone(),
            key: format!("{}{sep}{name}", self.key),
        }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Whether `rel` names a place below a folder: plain names only, no `..`, `.` or root. What
/// an S3 key (or other path from elsewhere) must be before it is joined to a local folder.
pub fn plain_relative(rel: &str) -> bool {
    std::path::Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// `path` below `root`, as text (`path` itself when it is not below `root`).
pub fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// A failed walk of the folder `root` (links followed): a link to a folder above it is
/// named as a loop, which is the folder's content and not an I/O failure.
pub fn walk_error(root: &Path, e: walkdir::Error) -> StorageError {
    let at = e.path().unwrap_or(root).to_path_buf();
    match e.loop_ancestor() {
        Some(up) => StorageError::Invalid(format!(
            "{}: {} is a link to {}, which holds it (a loop)",
            root.display(),
            at.display(),
            up.display()
        )),
        None => StorageError::Io {
            path: at,
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("cannot walk the folder")),
        },
    }
}

/// One object, as S3 describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Without the quotes S3 puts around it.
    pub etag: Option<String>,
    /// Seconds since the epoch.
    pub last_modified: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// S3 answered with an error: which request, which object, what it said.
    #[error("{0}")]
    S3(Box<S3Failure>),
    /// The request never got an answer from S3 (network, credentials, timeouts).
    #[error("{op} {uri} failed: {message}")]
    Transfer {
        op: &'static str,
        uri: String,
        message: String,
        transient: bool,
    },
    #[error("{uri}: the download does not match what S3 announced: {why}")]
    Mismatch { uri: String, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What S3 answered to one request for one object.
#[derive(Debug)]
pub struct S3Failure {
    pub op: &'static str,
    pub uri: String,
    pub bucket: String,
    pub key: String,
    pub code: String,
    pub status: Option<u16>,
    pub message: String,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (bucket \"{}\", key \"{}\") failed: S3 answered {}",
            self.op, self.uri, self.bucket, self.key, self.code
        )?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl StorageError {
    pub fn s3(failure: S3Failure) -> Self {
        StorageError::S3(Box::new(failure))
    }

    /// Worth another try: the network, a throttle, S3's own 5xx, or a truncated download.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::S3(f) => {
                f.status.is_some_and(|s| s >= 500)
                    || matches!(
                        f.code.as_str(),
                        "SlowDown" | "Throttling" | "RequestTimeout" | "InternalError"
                    )
            }
            StorageError::Transfer { transient, .. } => *transient,
            StorageError::Mismatch { .. } => true,
            _ => false,
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris() {
        let u = S3Uri::parse("s3://b/models/x.onnx").unwrap().unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("b", "models/x.onnx"));
        let u = S3Uri::parse("s3://b").unwrap().unwrap();
        assert_eq!(u.key, "");
        assert_eq!(u.join("x.out").key, "x.out");
        let u = S3Uri::parse("s3://b/out").unwrap().unwrap();
        assert_eq!(u.join("x.out").to_string(), "s3://b/out/x.out");
        assert!(S3Uri::parse("s3:///k").unwrap().is_err());
        assert!(S3Uri::parse("/opt/ml/model").is_none());
    }

    #[test]
    fn plain_relative_paths() {
        assert!(plain_relative("a/b.csv"));
        assert!(!plain_relative("a/../../x"));
        assert!(!plain_relative("/etc/passwd"));
        assert!(!plain_relative("./a"));
    }

    #[test]
    fn s3_errors_name_the_object_and_the_answer() {
        let e = StorageError::s3(S3Failure {
            op: "GetObject",
            uri: "s3://b/k".into(),
            bucket: "b".into(),
            key: "k".into(),
            code: "NoSuchKey".into(),
            status: Some(404),
            message: "The specified key does not exist.".into(),
        });
        assert_eq!(
            e.to_string(),
            "GetObject s3://b/k (bucket \"b\", key \"k\") failed: S3 answered NoSuchKey (HTTP 404): The specified key does not exist."
        );
        assert!(!e.is_transient());
    }
}
