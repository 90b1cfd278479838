//! Model archives for tests, hostile ones included: entries are written with raw header
//! fields, so names and link targets that `tar`'s own builder refuses can be made.

use std::io::Write;
use std::path::Path;

pub enum Item<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    HardLink(&'a str),
    CharDevice,
}

pub fn tar(items: &[(&str, Item<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, item) in items {
        let mut h = tar::Header::new_old();
        assert!(name.len() < 100, "name too long for an old header");
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        let (kind, data, link): (tar::EntryType, &[u8], &str) = match item {
            Item::File(bytes) => (tar::EntryType::Regular, bytes, ""),
            Item::Dir => (tar::EntryType::Directory, &[], ""),
            Item::Symlink(to) => (tar::EntryType::Symlink, &[], to),
            Item::HardLink(to) => (tar::EntryType::Link, &[], to),
            Item::CharDevice => (tar::EntryType::Char, &[], ""),
        };
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish tar")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A model folder's files as a `.tar.gz`, at the root or under `prefix/`.
pub fn model_tar_gz(dir: &Path, prefix: Option<&str>) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("model folder")
        .map(|e| e.expect("entry").path())
        // Files only: a baseline/ folder beside the model is not part of these archives.
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let name = match prefix {
                Some(pre) => format!("{pre}/{name}"),
                None => name,
            };
            (name, std::fs::read(&p).expect("read"))
        })
        .collect();
    files.sort();
    let items: Vec<(&str, Item<'_>)> = files
        .iter()
        .map(|(n, b)| (n.as_str(), Item::File(b)))
        .collect();
    gzip(&tar(&items))
}
