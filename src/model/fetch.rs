//! Model sources: a local folder, `.onnx` file or archive, or an S3 object, archive or
//! prefix, turned into a local model folder with a version.
//!
//! Anything that must be written (downloads, unpacked archives) goes to the cache folder,
//! never to the model folder, which is read-only on SageMaker. A cache entry is named after
//! the URI and the version, built by one process at a time in a folder of that process's own,
//! sealed with a list of its files and renamed into place, and reused when the same version is
//! asked for again while it still matches that list (`cache`).

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use tokio::sync::OnceCell;

use super::cache::{self, Cache};
use crate::storage::archive::{self, Limits};
use crate::storage::{relative, walk_error, Listing, S3Options, S3Store, S3Uri, StorageError};

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
    cache: Cache,
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
            cache: Cache::new(&opts.cache_dir, uri),
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
            Uri::Local(path) => local_version(path).map(|(v, _)| v),
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
        let (version, files) = local_version(path)?;
        let source = if path.is_dir() {
            let rels: Vec<String> = files.iter().map(|f| relative(path, f)).collect();
            match lone_archive(&rels) {
                Some(i) => files[i].clone(),
                None => {
                    return Ok(Fetched {
                        dir: path.to_path_buf(),
                        version,
                    })
                }
            }
        } else {
            path.to_path_buf()
        };
        let entry = self.cache.entry(&version)?;
        let _building = self.cache.lock(&entry);
        self.cache.claim(&entry);
        if !self.reusable(&entry, &version) {
            let tmp = archive::sibling(&entry, "building");
            self.settle(self.build_local(&source, &tmp), &tmp, &version, &entry)?;
        }
        Ok(Fetched {
            dir: model_root(&entry),
            version,
        })
    }

    /// Unpacks the archive, or links the model file (and its config): the file stays where
    /// it is.
    /// Seals what was built in `tmp` and renames it into place as `entry`; on any failure
    /// the temporary folder goes and this process's claim on the entry is dropped.
    fn settle(
        &self,
        built: Result<(), StorageError>,
        tmp: &Path,
        version: &str,
        entry: &Path,
    ) -> Result<(), StorageError> {
        let built = built
            .and_then(|()| cache::seal(tmp, version))
            .and_then(|()| rename_into_place(tmp, entry));
        if built.is_err() {
            let _ = std::fs::remove_dir_all(tmp);
            self.cache.unclaim(entry);
        }
        built
    }

    fn build_local(&self, source: &Path, tmp: &Path) -> Result<(), StorageError> {
        let name = source.file_name().unwrap_or_default().to_string_lossy();
        if archive::is_archive(&name) {
            archive::extract(source, tmp, self.opts.limits)?;
            return Ok(());
        }
        std::fs::create_dir_all(tmp).map_err(StorageError::io(tmp))?;
        let abs = std::fs::canonicalize(source).map_err(StorageError::io(source))?;
        let link = |from: &Path, name: &std::ffi::OsStr| {
            std::os::unix::fs::symlink(from, tmp.join(name))
                .map_err(StorageError::io(tmp.join(name)))
        };
        link(&abs, abs.file_name().unwrap_or_default())?;
        let config = abs.with_file_name(&self.opts.config_name);
        if config.is_file() {
            link(&config, config.file_name().unwrap_or_default())?;
        }
        Ok(())
    }

    async fn fetch_s3(&self, uri: &S3Uri) -> Result<Fetched, StorageError> {
        let store = self.store().await;
        // One object is a folder of one file, unless it is an archive to unpack; so is a
        // prefix that holds only an archive (what SageMaker training jobs write).
        let (version, objects, prefix, packed) = match store.object_or_prefix(uri).await? {
            Listing::Object(meta) => {
                let folder = uri.key.rfind('/').map_or(0, |i| i + 1);
                let packed = archive::is_archive(&uri.key[folder..]).then(|| uri.clone());
                let prefix = uri.key[..folder].to_string();
                (object_version(&meta), vec![meta], prefix, packed)
            }
            Listing::Prefix { objects, prefix } => {
                let rels: Vec<String> = objects
                    .iter()
                    .map(|o| o.key.strip_prefix(&prefix).unwrap_or(&o.key).to_string())
                    .collect();
                let packed = lone_archive(&rels).map(|i| S3Uri {
                    bucket: uri.bucket.clone(),
                    key: objects[i].key.clone(),
                });
                (prefix_version(&objects), objects, prefix, packed)
            }
        };
        let entry = self.cache.entry(&version)?;
        let _building = self.cache.lock(&entry);
        self.cache.claim(&entry);
        if !self.reusable(&entry, &version) {
            let tmp = archive::sibling(&entry, "building");
            let built = match packed {
                Some(object) => {
                    let file = archive::sibling(&entry, "archive");
                    let unpacked = match store.download(&object, &file).await {
                        Ok(_) => archive::extract(&file, &tmp, self.opts.limits)
                            .map(drop)
                            .map_err(StorageError::from),
                        Err(e) => Err(e),
                    };
                    let _ = std::fs::remove_file(&file);
                    unpacked
                }
                None => self.download_all(store, uri, &objects, &prefix, &tmp).await,
            };
            self.settle(built, &tmp, &version, &entry)?;
        }
        Ok(Fetched {
            dir: model_root(&entry),
            version,
        })
    }

    /// Whether the cache entry can be reused; an entry that no longer holds what its marker
    /// lists (a temp cleaner emptied it, a crash of an older mlapp) is removed, to be fetched
    /// again.
    fn reusable(&self, entry: &Path, version: &str) -> bool {
        if !entry.exists() {
            return false;
        }
        match cache::verify(entry, version) {
            Ok(()) => true,
            Err(why) => {
                log::warn!(
                    "the cached model {} is incomplete or damaged ({why}); fetching it again",
                    entry.display()
                );
                if let Err(e) = std::fs::remove_dir_all(entry) {
                    log::warn!("could not remove {}: {e}", entry.display());
                }
                false
            }
        }
    }

    /// Removes this URI's cache entries other than the one `keep` is in (after a switch to a
    /// new version), unless another process uses them.
    pub fn prune(&self, keep: &Path) {
        self.cache.prune(keep);
    }

    /// Lets other processes prune what this one fetched (a finished `transform`).
    pub fn release(&self) {
        self.cache.release();
    }

    /// Downloads `objects` into `into`, each at its key less `prefix`, within the archive
    /// caps: a URI one level too high (a training job's checkpoints) must not fill the disk.
    async fn download_all(
        &self,
        store: &S3Store,
        uri: &S3Uri,
        list: &[crate::storage::ObjectMeta],
        prefix: &str,
        into: &Path,
    ) -> Result<(), StorageError> {
        let limits = self.opts.limits;
        let bytes: u64 = list.iter().map(|o| o.size).fold(0, u64::saturating_add);
        if list.len() as u64 > limits.max_files || bytes > limits.max_bytes {
            return Err(StorageError::Invalid(format!(
                "{uri}: the prefix holds {} objects of {bytes} bytes, over the caps of {} files and {} MiB \
                 (--archive-max-files, --archive-max-mb); is the URI the model's folder?",
                list.len(),
                limits.max_files,
                limits.max_bytes >> 20
            )));
        }
        std::fs::create_dir_all(into).map_err(StorageError::io(into))?;
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
}

/// The archive a folder or prefix holds instead of a model: `model.tar.gz` (what SageMaker
/// training jobs write) when there is no `.onnx` file, or the only file when it is an archive.
fn lone_archive(rels: &[String]) -> Option<usize> {
    if rels
        .iter()
        .any(|r| r.to_ascii_lowercase().ends_with(".onnx"))
    {
        return None;
    }
    if let Some(i) = rels.iter().position(|r| r == "model.tar.gz") {
        return Some(i);
    }
    match rels {
        [only] if !only.contains('/') && archive::is_archive(only) => Some(0),
        _ => None,
    }
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
    let items: Vec<PathBuf> = items
        .flatten()
        .filter(|e| e.file_name() != cache::MARKER)
        .map(|e| e.path())
        .collect();
    match items.as_slice() {
        [only] if only.is_dir() => only.clone(),
        _ => entry.to_path_buf(),
    }
}

/// The version of a local file or folder, and the files it is made of. Links are followed
/// (a model folder may link to files elsewhere), but a link to a folder above it is refused
/// rather than walked for ever.
fn local_version(path: &Path) -> Result<(String, Vec<PathBuf>), StorageError> {
    if path.is_file() {
        let mut hash = Md5::new();
        hash_file(&mut hash, path)?;
        let version = format!("md5:{}", crate::storage::hex(&hash.finalize()));
        return Ok((version, vec![path.to_path_buf()]));
    }
    if !path.is_dir() {
        return Err(StorageError::Invalid(format!(
            "model folder {} does not exist or is not a folder",
            path.display()
        )));
    }
    // Every file's relative path and content, in order: a change anywhere is a new version.
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(path)
        .follow_links(true)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| walk_error(path, e))?;
        if e.file_type().is_file() {
            files.push(e.into_path());
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
    let version = format!("md5:{}", crate::storage::hex(&hash.finalize()));
    Ok((version, files))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_lone_archive_is_found_and_a_model_beside_it_wins() {
        assert_eq!(lone_archive(&names(&["model.tar.gz"])), Some(0));
        assert_eq!(lone_archive(&names(&["a.txt", "model.tar.gz"])), Some(1));
        assert_eq!(lone_archive(&names(&["weights.tgz"])), Some(0));
        assert_eq!(lone_archive(&names(&["model.onnx", "model.tar.gz"])), None);
        assert_eq!(lone_archive(&names(&["sub/m.ONNX", "model.tar.gz"])), None);
        assert_eq!(lone_archive(&names(&["a.tgz", "b.tgz"])), None);
        assert_eq!(lone_archive(&names(&["sub/a.tgz"])), None);
        assert_eq!(lone_archive(&names(&[])), None);
    }

    /// Another process building the same entry in the same cache, e.g. in another container
    /// where it has the same pid: its half-built folder is its own, left alone.
    #[test]
    fn builders_of_one_entry_keep_each_others_work() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"not really a model").unwrap();
        let opts = SourceOptions {
            cache_dir: dir.path().join("cache"),
            limits: Limits::default(),
            s3: S3Options::default(),
            config_name: "mlapp.json".into(),
        };
        let fetcher = Fetcher::new(model.to_str().unwrap(), opts).unwrap();
        let (version, _) = local_version(&model).unwrap();
        let entry = fetcher.cache.entry(&version).unwrap();
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        let pid = std::process::id();
        let theirs: Vec<PathBuf> = [format!("{pid}"), format!("{pid}-0123456789abcdef")]
            .iter()
            .map(|owner| entry.with_file_name(format!(".{name}.building-{owner}")))
            .collect();
        for tmp in &theirs {
            std::fs::create_dir_all(tmp).unwrap();
            std::fs::write(tmp.join("half.onnx"), b"half").unwrap();
        }
        let fetched = fetcher.fetch_local(&model).unwrap();
        assert_eq!(fetched.version, version);
        assert_eq!(cache::verify(&entry, &version), Ok(()));
        for tmp in &theirs {
            assert_eq!(std::fs::read(tmp.join("half.onnx")).unwrap(), b"half");
        }
        // Nothing of this process's own is left beside them.
        let left = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(left, theirs.len());
    }
}
