//! Hostile model archives are refused with a clear reason, and nothing is written outside
//! the model cache: path traversal, absolute paths, links out, device files, and bombs.

use std::path::Path;

use crate::common::archives::{gzip, tar, Item};
use crate::common::Server;
use crate::sources::failure_reason;

/// An archive's entries: name and what it is.
type Entries<'a> = Vec<(&'a str, Item<'a>)>;

/// Serves `archive` from `dir/model.tar.gz` with its cache in `dir/cache/inner` (so that an
/// escape by one or two levels lands in `dir`, where it is looked for); the reason it failed.
fn refused(dir: &Path, archive: Vec<u8>, extra: &[&str]) -> String {
    let file = dir.join("model.tar.gz");
    std::fs::write(&file, archive).unwrap();
    let cache = dir.join("cache/inner");
    let mut args = vec![
        "--model-uri",
        file.to_str().unwrap(),
        "--model-cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    let reason = failure_reason(&s);
    drop(s);
    // Nothing but the archive and the cache beside it, and no half-extracted entry left.
    let mut beside: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["cache", "model.tar.gz"], "{reason}");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        cached.is_empty(),
        "left in the cache: {cached:?} ({reason})"
    );
    let cache_parent: Vec<_> = std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cache_parent, ["inner"], "{reason}");
    reason
}

#[test]
fn entries_that_leave_the_folder_are_refused() {
    let onnx = std::fs::read(crate::common::model_dir("xgboost").join("model.onnx")).unwrap();
    let cases: Vec<(&str, Entries<'_>, &str)> = vec![
        (
            "path traversal",
            vec![
                ("model.onnx", Item::File(&onnx)),
                ("../../escape.txt", Item::File(b"gotcha")),
            ],
            "the path leaves the archive's folder",
        ),
        (
            "absolute path",
            vec![("/tmp/mlapp-escape.txt", Item::File(b"gotcha"))],
            "the path leaves the archive's folder",
        ),
        (
            "symlink out, then a write through it",
            vec![
                ("model.onnx", Item::File(&onnx)),
                ("out", Item::Symlink("../..")),
                ("out/escape.txt", Item::File(b"gotcha")),
            ],
            "a link to \"../..\", which is outside",
        ),
        (
            "absolute symlink",
            vec![("etc", Item::Symlink("/etc"))],
            "a link to \"/etc\"",
        ),
        (
            "hard link out",
            vec![("passwd", Item::HardLink("../../../../etc/passwd"))],
            "which is outside",
        ),
        (
            "device file",
            vec![("dev", Item::CharDevice)],
            "character device entries are not allowed",
        ),
    ];
    for (what, items, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let reason = refused(dir.path(), gzip(&tar(&items)), &[]);
        assert!(reason.contains(want), "{what}: {reason}");
        assert!(!Path::new("/tmp/mlapp-escape.txt").exists(), "{what}");
    }
}

#[test]
fn decompression_bombs_and_oversize_archives_are_refused() {
    // 256 MiB of zeros gzips to about 250 KiB: a ratio near 1000:1.
    let zeros = vec![0u8; 256 << 20];
    let bomb = gzip(&tar(&[("model.onnx", Item::File(&zeros))]));
    drop(zeros);
    assert!(bomb.len() < 2 << 20);
    let dir = tempfile::tempdir().unwrap();
    let reason = refused(dir.path(), bomb, &[]);
    assert!(
        reason.contains("decompression bomb") && reason.contains("200:1"),
        "{reason}"
    );

    // Under the ratio but over the size cap.
    let noise: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = gzip(&tar(&[("model.onnx", Item::File(&noise))]));
    let dir = tempfile::tempdir().unwrap();
    let reason = refused(dir.path(), big, &["--archive-max-mb", "2"]);
    assert!(reason.contains("more than 2 MiB"), "{reason}");

    let files: Vec<(String, Vec<u8>)> = (0..30).map(|i| (format!("f{i}"), vec![1u8])).collect();
    let items: Vec<(&str, Item<'_>)> = files
        .iter()
        .map(|(n, b)| (n.as_str(), Item::File(b)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let reason = refused(
        dir.path(),
        gzip(&tar(&items)),
        &["--archive-max-files", "20"],
    );
    assert!(reason.contains("more than 20 entries"), "{reason}");

    // Folders cost no bytes, but each is an inode: they count too.
    let onnx = std::fs::read(crate::common::model_dir("xgboost").join("model.onnx")).unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("d{i}/")).collect();
    let mut items: Vec<(&str, Item<'_>)> = vec![("model.onnx", Item::File(&onnx))];
    items.extend(names.iter().map(|n| (n.as_str(), Item::Dir)));
    let dir = tempfile::tempdir().unwrap();
    let reason = refused(
        dir.path(),
        gzip(&tar(&items)),
        &["--archive-max-files", "20"],
    );
    assert!(reason.contains("more than 20 entries"), "{reason}");
}

/// A GNU sparse entry: a few bytes of archive that tar expands to any number of zeros, past
/// the ratio cap (the zeros never pass through it). No model needs one.
#[test]
fn gnu_sparse_entries_are_refused() {
    let mut h = tar::Header::new_gnu();
    h.set_path("model.onnx").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(0);
    let gnu = h.as_gnu_mut().unwrap();
    // One hole of 1 MiB, then no data.
    gnu.sparse[0].set_offset(1 << 20);
    gnu.sparse[0].set_length(0);
    gnu.set_real_size(1 << 20);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    let archive = gzip(&b.into_inner().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let reason = refused(dir.path(), archive, &[]);
    assert!(
        reason.contains("GNU sparse entries are not allowed"),
        "{reason}"
    );
}

/// A model folder with links to itself: refused, not walked for ever (two such links once
/// made the walk 2^40 folders long).
#[test]
fn a_model_folder_with_a_link_loop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(
        crate::common::model_dir("xgboost").join("model.onnx"),
        model.join("model.onnx"),
    )
    .unwrap();
    std::os::unix::fs::symlink(".", model.join("a")).unwrap();
    std::os::unix::fs::symlink("..", model.join("b")).unwrap();
    let s = Server::start(&["--model-dir", model.to_str().unwrap()]);
    let reason = failure_reason(&s);
    assert!(reason.contains("a loop"), "{reason}");
}
