//! How much memory a model is charged against the budget, known before it is loaded.
//!
//! ONNX Runtime keeps a session's initializers (the weights) once per session, plus its
//! graph, kernels and arenas. The estimate is therefore the model's files once per session
//! and once for the parse, plus a fixed cost per session (threads, arena, kernel registry),
//! set from what 50 example models took (5.3 MiB each with one session; BENCHMARKS.md, "Many
//! models": with 3 MiB the estimate was 0.6 of what they took). It is an
//! estimate: the budget bounds the models' total, not the process's RSS.

use std::path::Path;

/// The fixed cost of one session, in bytes.
const PER_SESSION: u64 = 5 << 20;

/// The bytes a model in `dir` is charged when it runs `sessions` sessions.
pub fn estimate(dir: &Path, sessions: usize) -> u64 {
    let files: u64 = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .max_depth(8)
        .into_iter()
        .filter_map(Result::ok)
        // The baseline and sample rows are read once and dropped.
        .filter(|e| {
            e.file_type().is_file() && !e.path().components().any(|c| c.as_os_str() == "baseline")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let sessions = sessions.max(1) as u64;
    files
        .saturating_mul(sessions + 1)
        .saturating_add(PER_SESSION * sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_charged_its_files_per_session_and_once_more() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("baseline")).unwrap();
        std::fs::write(dir.path().join("baseline/statistics.json"), vec![0u8; 5000]).unwrap();
        assert_eq!(estimate(dir.path(), 2), 3000 + 2 * PER_SESSION);
        assert_eq!(estimate(dir.path(), 0), 2000 + PER_SESSION);
    }
}
