//! The model cache folder, which several processes may share (two services on one VM, or a
//! `serve` and a `transform`).
//!
//! An entry is `m-<uri hash>-<version hash>`, so every URI owns a prefix and a process only
//! ever removes entries of its own URI. An entry is built in a dot-named temporary folder,
//! sealed with a marker that lists its files and sizes, and renamed into place; it is reused
//! only while the marker still matches what is on disk (temp cleaners may empty a folder and
//! leave it). A process that uses an entry claims it with a `<entry>.claim-<pid>-<start>`
//! file beside it, and entries another live process claims are never pruned.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::storage::StorageError;

/// The file, inside an entry, that says it is complete and what it holds.
pub const MARKER: &str = ".mlapp-complete";

/// Temporary work older than this, by a process that is gone, was left by a crash.
const STALE: Duration = Duration::from_secs(3600);

#[derive(Serialize, Deserialize)]
struct Marker {
    version: String,
    /// Regular files: relative path and size.
    files: Vec<(String, u64)>,
    /// Symbolic links (a local `.onnx` file is served through links to it).
    links: Vec<String>,
}

pub struct Cache {
    dir: PathBuf,
    /// `m-<uri hash>-`: every entry of this URI, and only those, start with it.
    prefix: String,
}

impl Cache {
    pub fn new(dir: &Path, uri: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            prefix: format!("m-{}-", &md5_hex(uri.as_bytes())[..16]),
        }
    }

    /// The entry for `version` (created by the caller); creates the cache folder.
    pub fn entry(&self, version: &str) -> Result<PathBuf, StorageError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            StorageError::Invalid(format!(
                "the model cache folder {} is not writable ({e}); set --model-cache-dir / MLAPP_MODEL_CACHE_DIR",
                self.dir.display()
            ))
        })?;
        let name = format!("{}{}", self.prefix, &md5_hex(version.as_bytes())[..16]);
        Ok(self.dir.join(name))
    }

    /// Marks `entry` as used by this process, before it is checked or built, so that another
    /// process's prune leaves it alone.
    pub fn claim(&self, entry: &Path) {
        let claim = claim_path(entry);
        if let Err(e) = std::fs::File::create(&claim) {
            log::warn!("could not claim the cache entry {}: {e}", entry.display());
        }
    }

    /// Drops the claim on an entry that could not be built.
    pub fn unclaim(&self, entry: &Path) {
        let _ = std::fs::remove_file(claim_path(entry));
    }

    /// Drops this process's claims on this URI's entries (a `transform` that is done).
    pub fn release(&self) {
        self.prune_inner(None, false);
    }

    /// Removes this URI's entries other than the one `keep` is in, unless another live process
    /// claims them; drops this process's other claims, claims of processes that are gone, and
    /// temporary work a crash left more than an hour ago.
    pub fn prune(&self, keep: &Path) {
        let keep = keep
            .strip_prefix(&self.dir)
            .ok()
            .and_then(|rel| rel.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        self.prune_inner(keep.as_deref(), true);
    }

    fn prune_inner(&self, keep: Option<&str>, remove: bool) {
        let Ok(items) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let (mut entries, mut used) = (Vec::new(), HashSet::new());
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            if name.starts_with('.') {
                if remove && stale_work(&path, &name) {
                    log::info!(
                        "removing {}, left by a process that is gone",
                        path.display()
                    );
                    remove_any(&path);
                }
                continue;
            }
            if !name.starts_with(&self.prefix) {
                continue; // another URI's: its own process prunes it
            }
            match name.split_once(".claim-") {
                Some((entry, owner)) => {
                    let released = owner == token() && Some(entry) != keep;
                    if released || !alive(owner) {
                        let _ = std::fs::remove_file(&path);
                    } else {
                        used.insert(entry.to_string());
                    }
                }
                None => entries.push((name, path)),
            }
        }
        if !remove {
            return;
        }
        for (name, path) in entries {
            if Some(name.as_str()) == keep || used.contains(&name) {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => log::debug!("removed the cached model {}", path.display()),
                Err(err) => log::warn!("could not remove {}: {err}", path.display()),
            }
        }
    }
}

/// Writes the marker into a finished temporary entry, just before it is renamed into place.
pub fn seal(tmp: &Path, version: &str) -> Result<(), StorageError> {
    let mut marker = Marker {
        version: version.to_string(),
        files: Vec::new(),
        links: Vec::new(),
    };
    for item in walkdir::WalkDir::new(tmp).min_depth(1).sort_by_file_name() {
        let item = item.map_err(|e| StorageError::Invalid(format!("{}: {e}", tmp.display())))?;
        let rel = relative(tmp, item.path());
        if item.path_is_symlink() {
            marker.links.push(rel);
        } else if item.file_type().is_file() {
            let meta = item
                .metadata()
                .map_err(|e| StorageError::Invalid(format!("{}: {e}", item.path().display())))?;
            marker.files.push((rel, meta.len()));
        }
    }
    let path = tmp.join(MARKER);
    let text = serde_json::to_vec(&marker).unwrap_or_default();
    std::fs::write(&path, text).map_err(StorageError::io(&path))
}

/// Whether `entry` still holds what its marker lists, for `version`; why not otherwise.
pub fn verify(entry: &Path, version: &str) -> Result<(), String> {
    let text = std::fs::read(entry.join(MARKER)).map_err(|e| format!("no marker ({e})"))?;
    let marker: Marker =
        serde_json::from_slice(&text).map_err(|e| format!("unreadable marker ({e})"))?;
    if marker.version != version {
        return Err(format!("it holds version {}", marker.version));
    }
    for (rel, size) in &marker.files {
        match std::fs::symlink_metadata(entry.join(rel)) {
            Ok(m) if m.is_file() && m.len() == *size => {}
            Ok(m) if m.is_file() => {
                return Err(format!("{rel} has {} bytes, not {size}", m.len()));
            }
            _ => return Err(format!("{rel} is missing")),
        }
    }
    for rel in &marker.links {
        if !std::fs::symlink_metadata(entry.join(rel)).is_ok_and(|m| m.is_symlink()) {
            return Err(format!("the link {rel} is missing"));
        }
    }
    Ok(())
}

/// The default cache folder: somewhere temp cleaners (systemd-tmpfiles, reboots) leave alone.
/// `$XDG_CACHE_HOME/mlapp/models`, else `/var/cache/mlapp/models`, else
/// `$HOME/.cache/mlapp/models`, the first that is writable; else `<temp dir>/mlapp-models`.
pub fn default_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let candidates = [
        var("XDG_CACHE_HOME").map(|d| d.join("mlapp")),
        Some(PathBuf::from("/var/cache/mlapp")),
        var("HOME").map(|d| d.join(".cache/mlapp")),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join("models"))
        .find(|d| std::fs::create_dir_all(d).is_ok() && tempfile::tempfile_in(d).is_ok())
        .unwrap_or_else(|| std::env::temp_dir().join("mlapp-models"))
}

fn claim_path(entry: &Path) -> PathBuf {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    entry.with_file_name(format!("{name}.claim-{}", token()))
}

/// `<pid>-<start time>`: this process, told apart from an earlier one with the same pid (and
/// from a process in another container sharing the folder, which has its own pids).
fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    })
}

/// Whether the process named by `owner` (`<pid>-…`) may still run. Where that cannot be
/// told (no `/proc`), it is taken as running: an entry kept is better than one pulled away.
fn alive(owner: &str) -> bool {
    let Some(pid) = owner.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
        return false;
    };
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid).exists()
}

/// A temporary folder or file (`.<entry>.<what>-<pid>`) whose process is gone and that has
/// not changed for an hour.
fn stale_work(path: &Path, name: &str) -> bool {
    let pid = name.rsplit('-').next().unwrap_or_default();
    let old = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE);
    let mine = pid == std::process::id().to_string();
    old && !mine && !alive(pid)
}

fn remove_any(path: &Path) {
    let result = if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result {
        log::warn!("could not remove {}: {e}", path.display());
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

pub fn md5_hex(bytes: &[u8]) -> String {
    crate::storage::hex(&Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(cache: &Cache, version: &str) -> PathBuf {
        let entry = cache.entry(version).unwrap();
        let tmp = entry.with_file_name(format!(".tmp-{version}"));
        std::fs::create_dir_all(tmp.join("sub")).unwrap();
        std::fs::write(tmp.join("sub/model.onnx"), b"abc").unwrap();
        seal(&tmp, version).unwrap();
        std::fs::rename(&tmp, &entry).unwrap();
        entry
    }

    #[test]
    fn an_entry_is_trusted_only_while_it_matches_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), "s3://b/k");
        let entry = sealed(&cache, "v1");
        assert_eq!(verify(&entry, "v1"), Ok(()));
        assert!(verify(&entry, "v2").unwrap_err().contains("v1"));
        std::fs::write(entry.join("sub/model.onnx"), b"ab").unwrap();
        assert!(verify(&entry, "v1").unwrap_err().contains("2 bytes"));
        std::fs::remove_file(entry.join("sub/model.onnx")).unwrap();
        assert!(verify(&entry, "v1").unwrap_err().contains("missing"));
        let empty = dir.path().join("m-empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(verify(&empty, "v1").unwrap_err().contains("no marker"));
    }

    #[test]
    fn prune_keeps_other_uris_and_entries_live_processes_claim() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (Cache::new(dir.path(), "a"), Cache::new(dir.path(), "b"));
        let (old, claimed, new) = (sealed(&ours, "1"), sealed(&ours, "2"), sealed(&ours, "3"));
        let other = sealed(&theirs, "1");
        // Process 1 (init, always alive) uses version 2; a gone process claimed version 1.
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(dir.path().join(format!("{}.claim-1-0", name(&claimed))), "").unwrap();
        let dead = dir.path().join(format!("{}.claim-999999999-0", name(&old)));
        std::fs::write(&dead, "").unwrap();
        ours.claim(&old);
        ours.claim(&new);
        ours.prune(&new.join("model"));
        assert!(!old.exists() && !dead.exists());
        assert!(claimed.exists() && new.exists() && other.exists());
        assert!(claim_path(&new).exists() && !claim_path(&old).exists());
    }

    #[test]
    fn stale_work_is_old_and_orphaned() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(".m-x.extracting-999999999");
        std::fs::create_dir(&fresh).unwrap();
        assert!(!stale_work(&fresh, ".m-x.extracting-999999999"));
        let old = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::open(&fresh)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(stale_work(&fresh, ".m-x.extracting-999999999"));
        // Process 1 is alive: its work is kept, however old.
        let live = dir.path().join(".m-x.extracting-1");
        std::fs::create_dir(&live).unwrap();
        std::fs::File::open(&live)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!stale_work(&live, ".m-x.extracting-1"));
    }
}
