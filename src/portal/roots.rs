//! Where jobs may read and write (`--portal-roots`): the portal reads models, inputs and
//! ground truth and writes outputs with the server's own rights, so a shared server names the
//! folders and S3 prefixes that are its callers' to use.

use std::path::{Component, Path, PathBuf};

use super::spec::{invalid, Invalid};

#[derive(Debug, Default)]
pub struct Roots {
    local: Vec<PathBuf>,
    s3: Vec<String>,
}

impl Roots {
    /// Local roots must exist (they are resolved once, links included).
    pub fn parse(list: &[String]) -> Result<Roots, String> {
        let mut roots = Roots::default();
        for r in list.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            if let Some(rest) = r.strip_prefix("s3://") {
                if rest.is_empty() {
                    return Err("--portal-roots: s3:// needs a bucket".into());
                }
                roots
                    .s3
                    .push(format!("s3://{}/", rest.trim_end_matches('/')));
            } else {
                let p =
                    std::fs::canonicalize(r).map_err(|e| format!("--portal-roots: {r}: {e}"))?;
                roots.local.push(p);
            }
        }
        Ok(roots)
    }

    pub fn is_open(&self) -> bool {
        self.local.is_empty() && self.s3.is_empty()
    }

    /// Refuses a place outside every root (with no roots, everything is allowed).
    pub fn check(&self, field: &str, place: &str) -> Result<(), Invalid> {
        if self.is_open() {
            return Ok(());
        }
        let inside = if place.starts_with("s3://") {
            let p = if place.ends_with('/') {
                place.to_string()
            } else {
                format!("{place}/")
            };
            self.s3.iter().any(|r| p.starts_with(r.as_str()))
        } else {
            match resolve(Path::new(place)) {
                Some(p) => self.local.iter().any(|r| p.starts_with(r)),
                None => false,
            }
        };
        if inside {
            Ok(())
        } else {
            Err(invalid(
                field,
                format!("{place} is outside the portal's roots (--portal-roots)"),
            ))
        }
    }
}

/// The path with links resolved as far as it exists (an output folder may not exist yet);
/// None when it climbs with `..`, which is refused rather than reasoned about.
fn resolve(path: &Path) -> Option<PathBuf> {
    if path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Some(out);
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_outside_the_roots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        let roots =
            Roots::parse(&[inside.display().to_string(), "s3://bucket/jobs".into()]).unwrap();
        assert!(roots
            .check("input", &inside.join("a.csv").display().to_string())
            .is_ok());
        assert!(roots
            .check("output", &inside.join("not/yet/made").display().to_string())
            .is_ok());
        assert!(roots.check("output", "s3://bucket/jobs/2026-11/").is_ok());
        for bad in [
            dir.path().display().to_string(),
            inside.join("../x").display().to_string(),
            "s3://bucket/jobsx/".into(),
            "s3://other/jobs/".into(),
        ] {
            assert_eq!(
                roots.check("input", &bad).unwrap_err().field,
                "input",
                "{bad}"
            );
        }
        // A link inside a root that leads out is outside.
        std::os::unix::fs::symlink(dir.path(), inside.join("out")).unwrap();
        assert!(roots
            .check("input", &inside.join("out/x").display().to_string())
            .is_err());
        assert!(Roots::default().check("input", "/etc/passwd").is_ok());
    }
}
