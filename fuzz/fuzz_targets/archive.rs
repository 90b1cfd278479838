//! `storage::archive::extract` on arbitrary bytes (plain tar or gzip), into a scratch folder,
//! with small caps. Whether it succeeds or fails: no panic; nothing is written outside the
//! destination (the scratch folder holds the archive and, on success, the destination only:
//! no leftover temporary folder); no link under the destination leads out of it; the caps
//! hold (files, and unpacked bytes counted once per inode).
#![no_main]

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use mlapp::storage::archive::{self, Limits};

const LIMITS: Limits = Limits {
    max_bytes: 256 << 10,
    max_files: 32,
    max_ratio: 50,
};

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let root = scratch.path();
    let input = root.join("in");
    let boxed = root.join("box");
    fs::create_dir(&input).unwrap();
    fs::create_dir(&boxed).unwrap();
    let tar = input.join("model.tar.gz");
    fs::write(&tar, data).unwrap();
    let dest = boxed.join("model");

    let result = archive::extract(&tar, &dest, LIMITS);

    assert_eq!(
        names(root),
        ["box", "in"],
        "the scratch folder gained an entry"
    );
    assert_eq!(
        names(&input),
        ["model.tar.gz"],
        "the archive's folder changed"
    );
    assert_eq!(
        fs::read(&tar).unwrap(),
        data,
        "the archive itself was overwritten"
    );
    match &result {
        Ok(stats) => {
            assert_eq!(
                names(&boxed),
                ["model"],
                "a temporary folder was left behind"
            );
            assert!(stats.files <= LIMITS.max_files, "{stats:?}");
            assert!(stats.bytes <= LIMITS.max_bytes, "{stats:?}");
            check_tree(&dest);
        }
        Err(e) => {
            assert!(
                names(&boxed).is_empty(),
                "a failed extraction left {:?} ({e})",
                names(&boxed)
            );
            assert!(!e.to_string().is_empty());
        }
    }
});

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every link under `dest` stays under it, and the unpacked bytes respect the cap.
fn check_tree(dest: &Path) {
    let real_dest = dest.canonicalize().unwrap();
    let mut inodes = HashSet::new();
    let mut bytes = 0u64;
    let mut files = 0u64;
    for entry in walkdir::WalkDir::new(dest).follow_links(false) {
        let entry = entry.expect("a readable tree");
        let path = entry.path();
        let meta = fs::symlink_metadata(path).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).unwrap();
            let parent = path.parent().unwrap();
            let lexical = normalize(&parent.join(&target));
            assert!(
                lexical.starts_with(dest),
                "{} links to {} (outside)",
                path.display(),
                target.display()
            );
            if let Ok(real) = path.canonicalize() {
                assert!(
                    real.starts_with(&real_dest),
                    "{} resolves to {} (outside)",
                    path.display(),
                    real.display()
                );
            }
        } else if meta.is_file() && inodes.insert(meta.ino()) {
            files += 1;
            bytes += meta.len();
        }
    }
    assert!(files <= LIMITS.max_files, "{files} files on disk");
    assert!(bytes <= LIMITS.max_bytes, "{bytes} bytes on disk");
}

/// `path` with `.` and `..` resolved by text (links are checked by `canonicalize` too).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
