//! The model cache folder, which several processes may share (two services on one VM, a
//! `serve` and a `transform`, or containers that mount one volume, where pids repeat).
//!
//! An entry is `m-<uri hash>-<version hash>`, so every URI owns a prefix and a process only
//! ever removes entries of its own URI. An entry is built in a dot-named temporary folder
//! named after the building process (`archive::instance`, not just its pid), sealed with a
//! marker that lists its files and sizes, and renamed into place; it is reused only while the
//! marker still matches what is on disk (temp cleaners may empty a folder and leave it).
//!
//! Who uses what is told by `flock`s, which the kernel drops when a process dies and which
//! work across pid namespaces: a process holds `<entry>.lock` exclusively while it checks,
//! builds and claims an entry (a second builder waits, then reuses the sealed result) and
//! while it removes one, and deletes it before letting go. It claims an entry it uses with a
//! `<entry>.claim-<instance>` file that it holds a shared lock on for as long as it uses it;
//! a claim that can be locked exclusively is left over from a process that is gone.
//! Temporary work is removed only when it is an hour old and no process builds its entry.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::storage::archive::instance;
use crate::storage::{relative, StorageError};

/// The file, inside an entry, that says it is complete and what it holds.
pub const MARKER: &str = ".mlapp-complete";

/// Temporary work older than this, whose entry no process builds, was left by a crash.
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
    /// This process's claims: each entry's claim file, open and locked (shared).
    claims: Mutex<HashMap<PathBuf, File>>,
}

/// An entry locked exclusively: until it is dropped, no other process builds, claims or
/// removes it.
pub struct Building {
    lock: Option<File>,
    path: PathBuf,
}

impl Drop for Building {
    /// Removes the lock file while still holding it (a process waiting on it then takes the
    /// next one): an entry that failed to build leaves nothing behind.
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            let _ = std::fs::remove_file(&self.path);
            drop(lock);
        }
    }
}

impl Cache {
    pub fn new(dir: &Path, uri: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            prefix: format!("m-{}-", &md5_hex(uri.as_bytes())[..16]),
            claims: Mutex::default(),
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

    /// Takes `entry` for this process to check, build and claim, once no other process is
    /// building or removing it. Where it cannot be locked (a read-only cache of sealed entries,
    /// a file system without locks), the fetch goes on unlocked, as a claim does.
    pub fn lock(&self, entry: &Path) -> Building {
        let path = lock_path(entry);
        let lock = match lock_file(&path, Lock::Try) {
            Ok(None) => {
                log::info!(
                    "another process is fetching {}; waiting for it",
                    entry.display()
                );
                lock_file(&path, Lock::Exclusive)
            }
            other => other,
        };
        let lock = lock.unwrap_or_else(|e| {
            log::warn!("could not lock {}: {e}", path.display());
            None
        });
        Building { lock, path }
    }

    /// Marks `entry` as used by this process (the caller holds it with `lock`), so that no
    /// other process's prune removes it while this one lives.
    pub fn claim(&self, entry: &Path) {
        match lock_file(&claim_path(entry), Lock::Shared) {
            Ok(Some(file)) => {
                self.claims().insert(entry.to_path_buf(), file);
            }
            Ok(None) | Err(_) => {
                log::warn!("could not claim the cache entry {}", entry.display());
            }
        }
    }

    /// Drops the claim on an entry that could not be built.
    pub fn unclaim(&self, entry: &Path) {
        if let Some(file) = self.claims().remove(entry) {
            // Removed while still locked: no other process takes it for a stale claim meanwhile.
            let _ = std::fs::remove_file(claim_path(entry));
            drop(file);
        }
    }

    /// Drops this process's claims on this URI's entries (a `transform` that is done).
    pub fn release(&self) {
        let entries: Vec<PathBuf> = self.claims().keys().cloned().collect();
        for entry in entries {
            self.unclaim(&entry);
        }
    }

    /// Removes this URI's entries other than the one `keep` is in, unless another process
    /// claims them; drops this process's other claims, claims of processes that are gone, and
    /// temporary work a crash left more than an hour ago.
    pub fn prune(&self, keep: &Path) {
        let keep = keep
            .strip_prefix(&self.dir)
            .ok()
            .and_then(|rel| rel.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let released: Vec<PathBuf> = self
            .claims()
            .keys()
            .filter(|e| e.file_name().and_then(|n| n.to_str()) != keep.as_deref())
            .cloned()
            .collect();
        for entry in released {
            self.unclaim(&entry);
        }
        let Ok(items) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries = Vec::new();
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            if name.starts_with('.') {
                if stale_work(&self.dir, &path, &name) {
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
            if name.contains(".claim-") {
                drop_if_stale(&path);
            } else if let Some(entry) = name.strip_suffix(".lock") {
                if !self.dir.join(entry).exists() {
                    drop_if_stale(&path);
                }
            } else if Some(name.as_str()) != keep.as_deref() {
                entries.push((name, path));
            }
        }
        for (name, path) in entries {
            self.remove_unused(&name, &path);
        }
    }

    /// Removes `entry` unless a process claims it (or is claiming it right now).
    fn remove_unused(&self, name: &str, entry: &Path) {
        let lock = lock_path(entry);
        let Ok(Some(held)) = lock_file(&lock, Lock::Try) else {
            return; // being fetched: it is about to be claimed
        };
        // Claims made before the lock was taken: none can be made while it is held.
        let claimed = std::fs::read_dir(&self.dir).map_or(true, |items| {
            let claim = format!("{name}.claim-");
            items
                .flatten()
                .filter(|i| i.file_name().to_string_lossy().starts_with(&claim))
                .any(|i| !drop_if_stale(&i.path()))
        });
        if !claimed {
            match std::fs::remove_dir_all(entry) {
                Ok(()) => log::debug!("removed the cached model {}", entry.display()),
                Err(err) => log::warn!("could not remove {}: {err}", entry.display()),
            }
        }
        // Lock files exist only while held (see `Building`).
        let _ = std::fs::remove_file(&lock);
        drop(held);
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, File>> {
        // A panic elsewhere while it was held leaves the map as good as it was.
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
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
/// `$HOME/.cache/mlapp/models`, the first that is or could be made a writable folder; else
/// `<temp dir>/mlapp-models`. Nothing is created here: most models (a local folder) never use
/// the cache, and the first fetch that does creates it.
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
        .find(|d| creatable(d))
        .unwrap_or_else(|| std::env::temp_dir().join("mlapp-models"))
}

/// Whether `dir` is a writable folder, or its nearest existing ancestor is one (an unnamed
/// temporary file tells, and leaves nothing behind).
fn creatable(dir: &Path) -> bool {
    dir.ancestors()
        .find(|a| a.exists())
        .is_some_and(|a| a.is_dir() && tempfile::tempfile_in(a).is_ok())
}

fn claim_path(entry: &Path) -> PathBuf {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    entry.with_file_name(format!("{name}.claim-{}", instance()))
}

fn lock_path(entry: &Path) -> PathBuf {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    entry.with_file_name(format!("{name}.lock"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    Shared,
    Exclusive,
    /// Exclusive if no one holds it now, else None.
    Try,
}

/// Opens (creating) and locks `path`. A process that removes a lock or claim file does so
/// while it holds it exclusively, so a lock taken meanwhile may be on a file that is no longer
/// there: it is taken again on the file that is.
fn lock_file(path: &Path, how: Lock) -> std::io::Result<Option<File>> {
    for _ in 0..100 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match how {
            Lock::Shared => file.lock_shared()?,
            Lock::Exclusive => file.lock()?,
            Lock::Try => match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            },
        }
        let same = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
            (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => false,
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        if same {
            return Ok(Some(file));
        }
    }
    Err(std::io::Error::other(format!(
        "{} keeps being removed by another process",
        path.display()
    )))
}

/// Removes a claim or lock file that no process holds (its process is gone: the kernel
/// dropped its lock); whether it did (or the file is gone). Where locks cannot be told (a
/// file system without them), the file is taken as held: an entry kept is better than one
/// pulled away.
fn drop_if_stale(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return !path.exists();
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(path);
            true
        }
        Err(_) => false,
    }
}

/// Whether `path`, a temporary folder or file (`.<entry>.<what>-<instance>`, or work nested
/// in such a name), is another process's that has not changed for an hour and whose entry no
/// process is fetching now.
fn stale_work(dir: &Path, path: &Path, name: &str) -> bool {
    let old = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE);
    if !old || name.ends_with(instance()) {
        return false;
    }
    let entry = name.trim_start_matches('.').split('.').next().unwrap_or("");
    let lock = dir.join(format!("{entry}.lock"));
    let busy = std::fs::File::open(&lock).is_ok_and(|f| match f.try_lock_shared() {
        Ok(()) => false,
        Err(_) => true,
    });
    !busy
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

pub fn md5_hex(bytes: &[u8]) -> String {
    crate::storage::hex(&Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

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

    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// A claim file held by an open handle of its own: another process, maybe in another
    /// container where it is pid 1 too (the pid in the name tells nothing).
    fn held_claim(entry: &Path, owner: &str) -> File {
        let path = entry.with_file_name(format!("{}.claim-{owner}", name(entry)));
        let file = File::create(path).unwrap();
        file.lock_shared().unwrap();
        file
    }

    #[test]
    fn prune_keeps_other_uris_and_entries_live_processes_claim() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (Cache::new(dir.path(), "a"), Cache::new(dir.path(), "b"));
        let (old, claimed, new) = (sealed(&ours, "1"), sealed(&ours, "2"), sealed(&ours, "3"));
        let other = sealed(&theirs, "1");
        // A live process (pid 1 of another container) uses version 2; a gone one (also pid 1:
        // the kernel dropped its lock) claimed version 1.
        let live = held_claim(&claimed, "1-aaaa");
        let dead = dir.path().join(format!("{}.claim-1-bbbb", name(&old)));
        std::fs::write(&dead, "").unwrap();
        ours.claim(&old);
        ours.claim(&new);
        ours.prune(&new.join("model"));
        assert!(!old.exists() && !dead.exists());
        assert!(claimed.exists() && new.exists() && other.exists());
        assert!(claim_path(&new).exists() && !claim_path(&old).exists());
        // Once that process is gone, its claim is stale and its entry goes.
        drop(live);
        ours.prune(&new);
        assert!(!claimed.exists() && new.exists() && other.exists());
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| name(&e.unwrap().path()))
            .filter(|n| n.starts_with(&ours.prefix))
            .collect();
        let mut want = vec![name(&new), name(&claim_path(&new))];
        want.sort();
        let mut left = left;
        left.sort();
        assert_eq!(left, want, "only the kept entry and its claim remain");
    }

    #[test]
    fn an_entry_being_fetched_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), "a");
        let (old, new) = (sealed(&cache, "1"), sealed(&cache, "2"));
        let building = File::create(lock_path(&old)).unwrap();
        building.lock().unwrap();
        cache.prune(&new);
        assert!(
            old.exists(),
            "another process is fetching it, and claims it next"
        );
        drop(building);
        cache.prune(&new);
        assert!(!old.exists() && !lock_path(&old).exists());
    }

    #[test]
    fn a_second_builder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = std::sync::Arc::new(Cache::new(dir.path(), "a"));
        let entry = cache.entry("1").unwrap();
        let first = cache.lock(&entry);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let (cache, entry) = (cache.clone(), entry.clone());
            std::thread::spawn(move || {
                let _second = cache.lock(&entry);
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn stale_work_is_old_and_orphaned() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let make = |name: &str, age: Option<SystemTime>| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            if let Some(t) = age {
                File::open(&path).unwrap().set_modified(t).unwrap();
            }
            path
        };
        let fresh = make(".m-x.building-1-aaaa", None);
        assert!(!stale_work(dir.path(), &fresh, ".m-x.building-1-aaaa"));
        let orphan = make(".m-y.building-1-aaaa", Some(old));
        assert!(stale_work(dir.path(), &orphan, ".m-y.building-1-aaaa"));
        // This process's own work is kept, however old.
        let mine = format!(".m-y.building-{}", instance());
        let path = make(&mine, Some(old));
        assert!(!stale_work(dir.path(), &path, &mine));
        // So is work on an entry a process is fetching now, nested work included.
        let busy = make("..m-z.building-1-aaaa.extracting-1-aaaa", Some(old));
        let lock = File::create(dir.path().join("m-z.lock")).unwrap();
        lock.lock().unwrap();
        assert!(!stale_work(dir.path(), &busy, &name(&busy)));
        drop(lock);
        assert!(stale_work(dir.path(), &busy, &name(&busy)));
    }

    #[test]
    fn the_default_folder_is_not_created_until_used() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/models");
        assert!(creatable(&target));
        assert!(!dir.path().join("a").exists());
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(!creatable(&dir.path().join("file/models")));
    }
}
