//! Safe extraction of model archives (`.tar.gz`, `.tgz`, `.tar`).
//!
//! An archive comes from a bucket that someone else may write to, so nothing in it is trusted:
//! every entry is written by this code (never `tar`'s own unpacking), paths must stay inside
//! the target, links may not point out of it, device files and FIFOs are refused, and the
//! unpacked size, the file count and the compression ratio are capped while reading, so a
//! decompression bomb stops at the cap instead of filling the disk. Everything lands in a
//! temporary folder beside the target, renamed into place only once the whole archive is good.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Caps on what one archive may unpack to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes read out of the archive (tar headers and padding included).
    pub max_bytes: u64,
    pub max_files: u64,
    /// Unpacked bytes per compressed byte, checked once past `RATIO_GRACE` bytes.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_files: 10_000,
            max_ratio: 200,
        }
    }
}

/// Small archives compress well (tar's zero padding): the ratio only counts past this.
const RATIO_GRACE: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{archive}: entry \"{entry}\": {why}")]
    Entry {
        archive: PathBuf,
        entry: String,
        why: String,
    },
    #[error("{archive}: {why}")]
    Limit { archive: PathBuf, why: String },
    #[error("{archive}: not a readable tar archive: {source}")]
    Format { archive: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What an extraction wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Entries: files, folders and links.
    pub files: u64,
    pub bytes: u64,
}

/// Whether `name` looks like an archive this module unpacks.
pub fn is_archive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar")
}

/// Unpacks `archive` into `dest`, which must not exist yet: into a temporary folder beside
/// it first, renamed to `dest` when every entry was good. Gzip is detected by its magic.
pub fn extract(archive: &Path, dest: &Path, limits: Limits) -> Result<Extracted, ArchiveError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { path, source }
    };
    let tmp = sibling(dest, "extracting");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = extract_into(archive, &tmp, limits).and_then(|stats| {
        std::fs::rename(&tmp, dest).map_err(io_err(dest))?;
        Ok(stats)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// `dest` with a `.<what>-<instance>` suffix, for work that is renamed into place. Only this
/// process writes or removes it, whatever else shares the folder.
pub fn sibling(dest: &Path, what: &str) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.{what}-{}", instance()))
}

/// `<pid>-<random>`: this process. The pid alone does not tell processes apart when a folder
/// is shared across containers (each has its own pids, and all start at 1), nor from an
/// earlier process with the same pid.
pub fn instance() -> &'static str {
    use std::hash::{BuildHasher, Hasher};
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        // `RandomState` is seeded from the OS's random source: no crate needed for 64 bits.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        format!("{}-{:016x}", std::process::id(), h.finish())
    })
}

fn extract_into(archive: &Path, root: &Path, limits: Limits) -> Result<Extracted, ArchiveError> {
    let file = File::open(archive).map_err(|source| ArchiveError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut raw = BufReader::new(Counted::new(file));
    let gzip = {
        use std::io::BufRead;
        let head = raw.fill_buf().map_err(|source| ArchiveError::Io {
            path: archive.to_path_buf(),
            source,
        })?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let compressed = raw.get_ref().count.clone();
    let plain: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let capped = Capped {
        inner: plain,
        read: 0,
        compressed: gzip.then_some(compressed),
        limits,
        tripped: None,
    };
    let mut tar = tar::Archive::new(capped);
    let mut stats = Extracted::default();
    let entries = tar.entries().map_err(|source| ArchiveError::Format {
        archive: archive.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(archive, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let bad = |why: String| ArchiveError::Entry {
            archive: archive.to_path_buf(),
            entry: name.clone(),
            why,
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let Some(rel) = inside(&name) else {
            return Err(bad(
                "the path leaves the archive's folder (absolute or with ..)".into(),
            ));
        };
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        // Folders and links count too: each is an inode, and they cost no bytes.
        stats.files += 1;
        if stats.files > limits.max_files {
            return Err(limit(
                archive,
                format!("more than {} entries", limits.max_files),
            ));
        }
        let target = root.join(&rel);
        let io = |e: io::Error| bad(e.to_string());
        match kind {
            tar::EntryType::Directory => std::fs::create_dir_all(&target).map_err(io)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let declared = entry.header().size().unwrap_or(0);
                if stats.bytes.saturating_add(declared) > limits.max_bytes {
                    return Err(limit(
                        archive,
                        format!(
                            "unpacks to more than {} (entry \"{name}\" alone declares {declared} bytes)",
                            mib(limits.max_bytes)
                        ),
                    ));
                }
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut out = File::create(&target).map_err(io)?;
                let n = io::copy(&mut entry, &mut out).map_err(|e| read_error(archive, e))?;
                out.flush().map_err(io)?;
                stats.bytes += n;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if !link_inside(&link, kind == tar::EntryType::Symlink) {
                    return Err(bad(format!(
                        "a link to \"{link}\", which is outside the archive's folder"
                    )));
                }
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                if kind == tar::EntryType::Symlink {
                    std::os::unix::fs::symlink(&link, &target).map_err(io)?;
                } else {
                    std::fs::hard_link(root.join(&link), &target).map_err(io)?;
                }
            }
            other => {
                return Err(bad(format!(
                    "{} entries are not allowed in a model archive",
                    kind_name(other)
                )))
            }
        }
    }
    Ok(stats)
}

/// `name` as a relative path that stays inside the archive's folder, or None.
fn inside(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a link to `target` stays inside. Symbolic links are relative to the link's
/// folder and may not use `..` at all: resolving `..` through other links in the archive can
/// climb out even when the text of the path seems to stay in; without `..`, every link points
/// at or below its own folder. Hard links name a path from the archive's root.
fn link_inside(target: &str, symbolic: bool) -> bool {
    match inside(target) {
        Some(inner) => !target.is_empty() && (symbolic || !inner.as_os_str().is_empty()),
        None => false,
    }
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        // The zeros tar makes up for holes never pass the ratio cap; no model needs them.
        tar::EntryType::GNUSparse => "GNU sparse",
        _ => "special",
    }
}

fn limit(archive: &Path, why: String) -> ArchiveError {
    ArchiveError::Limit {
        archive: archive.to_path_buf(),
        why,
    }
}

/// A read error, or the limit that `Capped` tripped (it surfaces as an I/O error inside tar).
fn read_error(archive: &Path, e: io::Error) -> ArchiveError {
    if e.kind() == io::ErrorKind::FileTooLarge || e.kind() == io::ErrorKind::QuotaExceeded {
        return limit(archive, e.to_string());
    }
    ArchiveError::Format {
        archive: archive.to_path_buf(),
        source: e,
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Counts the bytes read from the archive file, shared with `Capped` for the ratio.
struct Counted<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            count: Default::default(),
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The unpacked stream, stopped with an error once it passes the size or ratio cap.
struct Capped {
    inner: Box<dyn Read>,
    read: u64,
    compressed: Option<std::rc::Rc<std::cell::Cell<u64>>>,
    limits: Limits,
    /// Once tripped, every later read fails the same way (tar may retry or skip).
    tripped: Option<(io::ErrorKind, String)>,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, why)) = &self.tripped {
            return Err(io::Error::new(*kind, why.clone()));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let trip = if self.read > self.limits.max_bytes {
            Some((
                io::ErrorKind::FileTooLarge,
                format!("unpacks to more than {}", mib(self.limits.max_bytes)),
            ))
        } else {
            self.compressed.as_ref().and_then(|c| {
                let packed = c.get().max(1);
                (self.read > RATIO_GRACE && self.read / packed > self.limits.max_ratio).then(|| {
                    (
                        io::ErrorKind::QuotaExceeded,
                        format!(
                            "compression ratio over {}:1 ({} unpacked from {} bytes): refused as a decompression bomb",
                            self.limits.max_ratio,
                            mib(self.read),
                            packed
                        ),
                    )
                })
            })
        };
        if let Some((kind, why)) = trip {
            self.tripped = Some((kind, why.clone()));
            return Err(io::Error::new(kind, why));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside() {
        assert_eq!(inside("a/b.onnx"), Some(PathBuf::from("a/b.onnx")));
        assert_eq!(inside("./a"), Some(PathBuf::from("a")));
        assert_eq!(inside("/etc/passwd"), None);
        assert_eq!(inside("a/../../x"), None);
        assert_eq!(inside("../x"), None);
    }

    #[test]
    fn links_may_not_climb() {
        assert!(link_inside("model.onnx", true));
        assert!(link_inside("sub/model.onnx", true));
        assert!(!link_inside("../model.onnx", true));
        assert!(!link_inside("sub/../../x", true));
        assert!(!link_inside("/etc/passwd", true));
        assert!(!link_inside("", true));
        assert!(link_inside("a/b", false));
        assert!(!link_inside("../b", false));
    }

    #[test]
    fn archive_names() {
        assert!(is_archive("model.tar.gz"));
        assert!(is_archive("M.TGZ"));
        assert!(is_archive("x.tar"));
        assert!(!is_archive("model.onnx"));
    }
}
