//! A model repository: a folder or S3 prefix holding one model per entry, each served under
//! its entry's name. `churn/` (a folder or prefix), `churn.tar.gz`, `churn.tgz`, `churn.tar`
//! and `churn.onnx` are all the model `churn`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::storage::{S3Options, S3Store, S3Uri, StorageError};

const ARCHIVES: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".onnx"];

pub struct Repository {
    root: Root,
    text: String,
    s3: S3Options,
    /// The last listing and when it was made; its lock is held while listing, so that
    /// requests for names not loaded make one listing, not one each.
    listed: Mutex<Option<(Instant, Arc<Models>)>>,
}

/// Model name → URI.
pub type Models = BTreeMap<String, String>;

enum Root {
    Local(PathBuf),
    S3(S3Uri),
}

/// A model's name: what clients put in `/models/{name}/invoke` and the Target-Model header.
/// Plain characters only, so that a name is never a path outside the repository.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The model name of a repository entry or of a Target-Model value (`[path/]name.tar.gz`):
/// the last segment without its archive ending.
pub fn entry_name(entry: &str) -> &str {
    let last = entry
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    ARCHIVES
        .iter()
        .find_map(|ext| last.strip_suffix(ext))
        .unwrap_or(last)
}

impl Repository {
    pub fn new(uri: &str, s3: S3Options) -> Result<Self, StorageError> {
        let root = match S3Uri::parse(uri) {
            Some(parsed) => {
                let mut p = parsed?;
                if !p.key.is_empty() && !p.key.ends_with('/') {
                    p.key.push('/');
                }
                Root::S3(p)
            }
            None => Root::Local(PathBuf::from(uri)),
        };
        Ok(Self {
            root,
            text: uri.to_string(),
            s3,
            listed: Mutex::new(None),
        })
    }

    /// The listing, made again when the last one is older than `ttl`. Blocks (on its own
    /// runtime): call it from a blocking thread.
    pub fn cached(&self, ttl: Duration) -> Result<Arc<Models>, StorageError> {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, models)) = listed.as_ref() {
            if at.elapsed() < ttl {
                return Ok(Arc::clone(models));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StorageError::io(PathBuf::from(&self.text)))?;
        let models = Arc::new(rt.block_on(self.list())?);
        *listed = Some((Instant::now(), Arc::clone(&models)));
        Ok(models)
    }

    pub fn uri(&self) -> &str {
        &self.text
    }

    /// Every model in the repository now: name → URI. Entries whose names are not plain
    /// (`valid_name`) are skipped with a warning; of two entries with one name (`a/` and
    /// `a.tar.gz`), the first in name order is kept and the other named in the log.
    pub async fn list(&self) -> Result<Models, StorageError> {
        let entries: Vec<(String, String)> = match &self.root {
            Root::Local(dir) => {
                let read = std::fs::read_dir(dir).map_err(StorageError::io(dir))?;
                let mut out = Vec::new();
                for e in read {
                    let e = e.map_err(StorageError::io(dir))?;
                    let file = e.file_name().to_string_lossy().into_owned();
                    let path = e.path();
                    let model = path.is_dir() || ARCHIVES.iter().any(|x| file.ends_with(x));
                    if model && !file.starts_with('.') {
                        out.push((file, path.display().to_string()));
                    }
                }
                out
            }
            Root::S3(prefix) => {
                let store = S3Store::connect(&self.s3).await;
                let mut out: Vec<(String, String)> = Vec::new();
                for o in store.list(prefix).await? {
                    let Some(rest) = o.key.strip_prefix(prefix.key.as_str()) else {
                        continue;
                    };
                    let (entry, uri) = match rest.split_once('/') {
                        Some((dir, _)) => (dir.to_string(), prefix.join(&format!("{dir}/"))),
                        None if ARCHIVES.iter().any(|x| rest.ends_with(x)) => {
                            (rest.to_string(), prefix.join(rest))
                        }
                        None => continue,
                    };
                    if out.last().map(|(e, _)| e) != Some(&entry) {
                        out.push((entry, uri.to_string()));
                    }
                }
                out
            }
        };
        let mut models = BTreeMap::new();
        let mut sorted = entries;
        sorted.sort();
        for (entry, uri) in sorted {
            let name = entry_name(&entry).to_string();
            if !valid_name(&name) {
                log::warn!(
                    "{}: skipping {entry:?}: a model name is letters, digits, '.', '_' and '-'",
                    self.text
                );
                continue;
            }
            if let Some(kept) = models.get(&name) {
                log::warn!(
                    "{}: {entry:?} is also the model {name:?}; serving {kept}",
                    self.text
                );
                continue;
            }
            models.insert(name, uri);
        }
        Ok(models)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_name_is_its_entry_without_the_archive_ending() {
        assert_eq!(entry_name("churn.tar.gz"), "churn");
        assert_eq!(entry_name("team/churn.tgz"), "churn");
        assert_eq!(entry_name("churn/"), "churn");
        assert_eq!(entry_name("churn.onnx"), "churn");
        assert_eq!(entry_name("v1.2"), "v1.2");
        assert!(valid_name("model-a_1.2"));
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_local_repository_lists_folders_archives_and_onnx_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("a")).unwrap();
        std::fs::write(p.join("a.tar.gz"), b"x").unwrap();
        std::fs::write(p.join("b.onnx"), b"x").unwrap();
        std::fs::write(p.join("c.tgz"), b"x").unwrap();
        std::fs::write(p.join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(p.join(".hidden")).unwrap();
        std::fs::create_dir(p.join("bad name")).unwrap();
        let repo = Repository::new(p.to_str().unwrap(), S3Options::default()).unwrap();
        let models = repo.list().await.unwrap();
        let names: Vec<&str> = models.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(models["a"].ends_with("/a"), "{}", models["a"]);
        assert!(models["b"].ends_with("b.onnx"));
        let missing = Repository::new("/no/such/repo", S3Options::default()).unwrap();
        assert!(missing
            .list()
            .await
            .unwrap_err()
            .to_string()
            .contains("/no/such/repo"));
    }
}
