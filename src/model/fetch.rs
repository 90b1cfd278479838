//! Model sources: a local folder, `.onnx` file or archive, or an S3 object, archive or
//! prefix, turned into a local model folder with a version.
//!
//! Anything that must be written (downloads, unpacked archives) goes to the cache folder,
//! never to the model folder, which is read-only on SageMaker. A cache entry is named after
//! the URI and the version, is complete once it exists (it is renamed into place), and is
//! reused when the same version is asked for again.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use tokio::sync::OnceCell;

use crate::storage::archive::{self, Limits};
use crate::storage::{Listing, S3Options, S3Store, S3Uri, StorageError};

/// Where models are fetched to and how.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub cache_dir: PathBuf,
    pub limits: Limits,
    pub s3: S3Options,
    /// The model config file's name, linked beside a single `.onnx` file when it has one.
    pub config_name: String,
}

/// A model folder ready to load, and the version it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub dir: PathBuf,
    /// `md5:<hex>` of local content, `etag:<etag>` of an S3 object, `etags:<hex>` of an S3
    /// prefix's listing.
    pub version: String,
}

enum Uri {
    Local(PathBuf),
    S3(S3Uri),
}

pub struct Fetcher {
    text: String,
    uri: Uri,
    opts: SourceOptions,
    s3: OnceCell<S3Store>,
}

impl Fetcher {
    pub fn new(uri: &str, opts: SourceOptions) -> Result<Self, StorageError> {
        let parsed = match S3Uri::parse(uri) {
            Some(s3) => Uri::S3(s3?),
            None => Uri::Local(PathBuf::from(uri)),
        };
        Ok(Self {
            text: uri.to_string(),
            uri: parsed,
            opts,
            s3: OnceCell::new(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.text
    }

    async fn store(&self) -> &S3Store {
        self.s3
            .get_or_init(|| S3Store::connect(&self.opts.s3))
            .await
    }

    /// The version at the URI now, without downloading the model (for polling).
    pub async fn version(&self) -> Result<String, StorageError> {
        match &self.uri {
            Uri::Local(path) => local_version(path),
            Uri::S3(uri) => Ok(match self.store().await.object_or_prefix(uri).await? {
                Listing::Object(meta) => object_version(&meta),
                Listing::Prefix { objects, .. } => prefix_version(&objects),
            }),
        }
    }

    /// A local model folder holding the URI's current version.
    pub async fn fetch(&self) -> Result<Fetched, StorageError> {
        match &self.uri {
            Uri::Local(path) => self.fetch_local(path),
            Uri::S3(uri) => self.fetch_s3(uri).await,
        }
    }

    fn fetch_local(&self, path: &Path) -> Result<Fetched, StorageError> {
        let version = local_version(path)?;
        if path.is_dir() {
            return Ok(Fetched {
                dir: path.to_path_buf(),
                version,
            });
        }
        let entry = self.entry(&version)?;
        if !entry.exists() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if archive::is_archive(&name) {
                archive::extract(path, &entry, self.opts.limits)?;
            } else {
                // A folder of links: the file stays where it is, and so does its config.
                let tmp = archive::sibling(&entry, "linking");
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(StorageError::io(&tmp))?;
                let abs = std::fs::canonicalize(path).map_err(StorageError::io(path))?;
                let link = |from: &Path, name: &std::ffi::OsStr| {
                    std::os::unix::fs::symlink(from, tmp.join(name))
                        .map_err(StorageError::io(tmp.join(name)))
                };
                link(&abs, abs.file_name().unwrap_or_default())?;
                let config = abs.with_file_name(&self.opts.config_name);
                if config.is_file() {
                    link(&config, config.file_name().unwrap_or_default())?;
                }
                rename_into_place(&tmp, &entry)?;
            }
        }
        Ok(Fetched {
            dir: model_root(&entry),
            version,
        })
    }

    async fn fetch_s3(&self, uri: &S3Uri) -> Result<Fetched, StorageError> {
        let store = self.store().await;
        // One object is a folder of one file, unless it is an archive to unpack.
        let (version, objects, prefix, packed) = match store.object_or_prefix(uri).await? {
            Listing::Object(meta) => {
                let folder = uri.key.rfind('/').map_or(0, |i| i + 1);
                let packed = archive::is_archive(&uri.key[folder..]);
                let prefix = uri.key[..folder].to_string();
                (object_version(&meta), vec![meta], prefix, packed)
            }
            Listing::Prefix { objects, prefix } => {
                (prefix_version(&objects), objects, prefix, false)
            }
        };
        let entry = self.entry(&version)?;
        if entry.exists() {
            // This version was fetched before (renamed into place only when complete).
        } else if packed {
            let file = archive::sibling(&entry, "archive");
            store.download(uri, &file).await?;
            let unpacked = archive::extract(&file, &entry, self.opts.limits);
            let _ = std::fs::remove_file(&file);
            unpacked?;
        } else {
            let tmp = archive::sibling(&entry, "downloading");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(StorageError::io(&tmp))?;
            if let Err(e) = download_all(store, uri, &objects, &prefix, &tmp).await {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            rename_into_place(&tmp, &entry)?;
        }
        Ok(Fetched {
            dir: model_root(&entry),
            version,
        })
    }

    /// The cache entry for `version` of this URI (created lazily by the caller).
    fn entry(&self, version: &str) -> Result<PathBuf, StorageError> {
        let dir = &self.opts.cache_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Invalid(format!(
                "the model cache folder {} is not writable ({e}); set --model-cache-dir / MLAPP_MODEL_CACHE_DIR",
                dir.display()
            ))
        })?;
        let id = md5_hex([self.text.as_bytes(), b"\n", version.as_bytes()]);
        Ok(dir.join(format!("m-{}", &id[..16])))
    }

    /// Removes this cache's entries other than `keep` (after a switch to a new version).
    pub fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.opts.cache_dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let ours = e.file_name().to_string_lossy().starts_with("m-");
            if ours && !keep.starts_with(&path) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => log::debug!("removed the cached model {}", path.display()),
                    Err(err) => log::warn!("could not remove {}: {err}", path.display()),
                }
            }
        }
    }
}

/// Downloads `objects` into `into`, each at its key less `prefix`.
async fn download_all(
    store: &S3Store,
    uri: &S3Uri,
    list: &[crate::storage::ObjectMeta],
    prefix: &str,
    into: &Path,
) -> Result<(), StorageError> {
    for o in list {
        let rel = o.key.strip_prefix(prefix).unwrap_or(&o.key);
        if rel.is_empty() || !crate::storage::plain_relative(rel) {
            return Err(StorageError::Invalid(format!(
                "s3://{}/{}: this key would be written outside the model folder",
                uri.bucket, o.key
            )));
        }
        let dest = into.join(rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(StorageError::io(dir))?;
        }
        let object = S3Uri {
            bucket: uri.bucket.clone(),
            key: o.key.clone(),
        };
        store.download(&object, &dest).await?;
    }
    Ok(())
}

/// Renames a finished temporary folder to the entry; another process that got there first
/// left the same content, so its entry is kept.
fn rename_into_place(tmp: &Path, entry: &Path) -> Result<(), StorageError> {
    match std::fs::rename(tmp, entry) {
        Ok(()) => Ok(()),
        Err(_) if entry.is_dir() => {
            let _ = std::fs::remove_dir_all(tmp);
            Ok(())
        }
        Err(e) => Err(StorageError::Io {
            path: entry.to_path_buf(),
            source: e,
        }),
    }
}

/// Archives often hold one folder (`tar czf model.tar.gz model/`): the model is in it.
fn model_root(entry: &Path) -> PathBuf {
    let Ok(items) = std::fs::read_dir(entry) else {
        return entry.to_path_buf();
    };
    let items: Vec<PathBuf> = items.flatten().map(|e| e.path()).collect();
    match items.as_slice() {
        [only] if only.is_dir() => only.clone(),
        _ => entry.to_path_buf(),
    }
}

fn local_version(path: &Path) -> Result<String, StorageError> {
    if path.is_file() {
        let mut hash = Md5::new();
        hash_file(&mut hash, path)?;
        return Ok(format!("md5:{}", crate::storage::hex(&hash.finalize())));
    }
    if !path.is_dir() {
        return Err(StorageError::Invalid(format!(
            "model folder {} does not exist or is not a folder",
            path.display()
        )));
    }
    // Every file's relative path and content, in order: a change anywhere is a new version.
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir)
            .map_err(StorageError::io(&dir))?
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut hash = Md5::new();
    for f in &files {
        hash.update(
            f.strip_prefix(path)
                .unwrap_or(f)
                .as_os_str()
                .as_encoded_bytes(),
        );
        hash.update([0]);
        hash_file(&mut hash, f)?;
    }
    Ok(format!("md5:{}", crate::storage::hex(&hash.finalize())))
}

/// Feeds a file to `hash` a buffer at a time: an archive or model of any size, in constant
/// memory (this runs at every poll).
fn hash_file(hash: &mut Md5, path: &Path) -> Result<(), StorageError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(StorageError::io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(StorageError::io(path))?;
        if n == 0 {
            return Ok(());
        }
        hash.update(&buf[..n]);
    }
}

fn object_version(meta: &crate::storage::ObjectMeta) -> String {
    match &meta.etag {
        Some(etag) => format!("etag:{etag}"),
        None => format!(
            "size:{}:modified:{}",
            meta.size,
            meta.last_modified.unwrap_or(0)
        ),
    }
}

fn prefix_version(list: &[crate::storage::ObjectMeta]) -> String {
    let mut hash = Md5::new();
    for o in list {
        hash.update(o.key.as_bytes());
        hash.update(format!(
            "\0{}\0{}\0{}\n",
            o.etag.as_deref().unwrap_or(""),
            o.size,
            o.last_modified.unwrap_or(0)
        ));
    }
    format!("etags:{}", crate::storage::hex(&hash.finalize()))
}

fn md5_hex<const N: usize>(parts: [&[u8]; N]) -> String {
    let mut hash = Md5::new();
    for p in parts {
        hash.update(p);
    }
    crate::storage::hex(&hash.finalize())
}
