//! The model's life in `serve`: the first load, then reloads on SIGHUP or when polling finds
//! a new version at the model URI.
//!
//! A reload fetches and warms the new version beside the old one, switches the one pointer
//! requests read, lets requests that already hold the old model finish, then frees it. A
//! failed reload leaves the old model serving and says why in the log, `/info` and metrics.
//! When it failed for what that version holds (its config, signature, outputs or warm-up, an
//! archive refused), polls then skip it (no fetch, load and warm-up every few seconds for
//! ever) until the URI holds another one, and SIGHUP still retries it; a failure of the moment
//! (I/O, the device or its memory, files removed meanwhile) is retried at the next poll.
//! All of this runs on one thread of its own, so loads never overlap and never block HTTP.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::web;
use ort::environment::Environment;
use serde::Serialize;

use super::{AppState, Readiness};
use crate::engine::{self, out_of_resources, LoadOptions, LoadedModel};
use crate::model::fetch::Fetcher;
use crate::model::ModelError;
use crate::monitor::{Metrics, ModelInfo};
use crate::storage::{ArchiveError, StorageError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Poll,
}

/// The active version and the last reload, for `GET /info`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModelStatus {
    pub uri: String,
    pub active: Option<ModelInfo>,
    pub last_reload: Option<ReloadOutcome>,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// The version that failed to load and that polls skip, until another version loads.
    pub last_failed_version: Option<String>,
    pub last_failed_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReloadOutcome {
    pub at_unix: f64,
    pub trigger: &'static str,
    pub ok: bool,
    /// The version it switched to, or why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Loader {
    pub env: &'static Environment,
    pub fetcher: Fetcher,
    pub opts: LoadOptions,
    pub metrics: Arc<Metrics>,
    pub state: web::Data<AppState>,
    /// How often to look for a new version; None: only on SIGHUP.
    pub poll: Option<Duration>,
    /// How long a replaced model waits for the requests still holding it.
    pub drain: Duration,
    /// Live monitoring of each model loaded.
    pub monitor: crate::monitor::setup::MonitorArgs,
    pub s3: crate::storage::S3Options,
}

impl Loader {
    /// Starts the loader thread: the first load at once, then one load per trigger.
    pub fn spawn(self) -> std::io::Result<Sender<Trigger>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mlapp-loader".into())
            .spawn(move || self.run(rx))?;
        Ok(tx)
    }

    fn run(self, triggers: Receiver<Trigger>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                self.state
                    .set(Readiness::Failed(format!("cannot start the loader: {e}")));
                return;
            }
        };
        self.state
            .update_status(|s| s.uri = self.fetcher.uri().to_string());
        let (mut current, mut failed) = (None, None);
        match self.load(&rt, None, None) {
            Ok(v) => current = Some(v),
            Err(v) => failed = v,
        }
        loop {
            let next = match self.poll {
                Some(every) => match triggers.recv_timeout(every) {
                    Ok(t) => t,
                    Err(RecvTimeoutError::Timeout) => Trigger::Poll,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match triggers.recv() {
                    Ok(t) => t,
                    Err(_) => return,
                },
            };
            // Signals that arrived during a load ask for one more load, not one each.
            let trigger =
                triggers.try_iter().fold(
                    next,
                    |t, more| if more == Trigger::Signal { more } else { t },
                );
            let mut polled = None;
            if trigger == Trigger::Poll {
                match rt.block_on(self.fetcher.version()) {
                    Ok(v) if current.as_deref() == Some(v.as_str()) => continue,
                    Ok(v) if failed.as_deref() == Some(v.as_str()) => continue,
                    Ok(v) => {
                        log::info!("{}: new version {v}, reloading", self.fetcher.uri());
                        polled = Some(v);
                    }
                    Err(e) => {
                        log::warn!(
                            "{}: polling for a new version failed: {e}",
                            self.fetcher.uri()
                        );
                        continue;
                    }
                }
            } else {
                log::info!("SIGHUP: reloading the model from {}", self.fetcher.uri());
            }
            match self.load(&rt, Some(trigger), polled.as_deref()) {
                Ok(v) => (current, failed) = (Some(v), None),
                Err(Some(v)) => failed = Some(v),
                Err(None) => {}
            }
        }
    }

    /// One load; the version now serving when it worked, else the version that failed when
    /// it failed for what the version holds (not for a network error, which the next poll
    /// retries). `polled` is the version a poll saw, for failures before the fetch knows it.
    fn load(
        &self,
        rt: &tokio::runtime::Runtime,
        trigger: Option<Trigger>,
        polled: Option<&str>,
    ) -> Result<String, Option<String>> {
        let (known, loaded) = match rt.block_on(self.fetcher.fetch()) {
            Ok(f) => match engine::load(self.env, &f.dir, &self.opts, Arc::clone(&self.metrics)) {
                Ok(mut m) => {
                    // The folder of an archive or S3 model is a cache entry named by its
                    // version: metrics series keyed by it would start anew at every reload.
                    // A name in the model's config stays.
                    if m.source.config.name.is_none() {
                        m.name = Arc::from(stable_name(self.fetcher.uri()));
                    }
                    match self.monitor.attach(&m, rt, &self.s3) {
                        Ok(monitor) => {
                            m.monitor = monitor;
                            (Some(f.version.clone()), Ok((f, m)))
                        }
                        Err(e) => (Some(f.version), Err(e.to_string())),
                    }
                }
                Err(e) => {
                    let known = Some(f.version).filter(|_| lasting_load(&e, &f.dir));
                    (known, Err(e.to_string()))
                }
            },
            Err(e) => (
                polled.filter(|_| lasting_fetch(&e)).map(str::to_string),
                Err(e.to_string()),
            ),
        };
        let trigger_name = match trigger {
            Some(Trigger::Signal) => "SIGHUP",
            Some(Trigger::Poll) => "poll",
            None => "start",
        };
        match loaded {
            Ok((fetched, model)) => {
                let version = fetched.version.clone();
                log::info!(
                    "ready: {} version {version} on {} ({}, {} features, {} sessions, batching {}) loaded and warmed up in {:.3} s",
                    model.source.file.display(),
                    model.provider,
                    model.plan.kind(),
                    model.signature.features.len(),
                    model.sessions,
                    model.warmup.batching(model.batching),
                    model.load_seconds
                );
                let now = unix(SystemTime::now());
                let info = ModelInfo {
                    name: Arc::clone(&model.name),
                    file: model.source.file.display().to_string(),
                    kind: model.plan.kind().to_string(),
                    provider: model.provider.into(),
                    load_seconds: model.load_seconds,
                    sessions: model.sessions,
                    uri: self.fetcher.uri().to_string(),
                    version: version.clone(),
                    loaded_at_unix: now,
                    warmup: model.warmup.to_string(),
                    batching: model.warmup.batching(model.batching).to_string(),
                };
                self.metrics.set_model(info.clone());
                self.state.update_status(|s| {
                    s.active = Some(info);
                    s.last_failed_version = None;
                    s.last_failed_reason = None;
                    if trigger.is_some() {
                        s.reloads_succeeded += 1;
                        s.last_reload = Some(ReloadOutcome {
                            at_unix: now,
                            trigger: trigger_name,
                            ok: true,
                            version: Some(version.clone()),
                            error: None,
                        });
                    }
                });
                if trigger.is_some() {
                    self.metrics.reload(true);
                }
                let previous = self.state.swap(Readiness::Ready(Arc::new(model)));
                if let Readiness::Ready(old) = previous {
                    self.retire(old);
                }
                self.fetcher.prune(&fetched.dir);
                Ok(version)
            }
            Err(why) => {
                let serving = self.state.model().ok();
                match (&serving, trigger) {
                    (Some(_), Some(_)) => {
                        let v = self.state.status().active.map(|a| a.version);
                        log::error!(
                            "reload ({trigger_name}) failed; still serving version {}: {why}",
                            v.unwrap_or_default()
                        );
                    }
                    _ => {
                        log::error!("model failed to load, /ping answers 503: {why}");
                        self.state.set(Readiness::Failed(why.clone()));
                    }
                }
                if let Some(v) = &known {
                    log::warn!(
                        "version {v} will not be loaded again until the URI holds another version or SIGHUP asks"
                    );
                }
                self.state.update_status(|s| {
                    if known.is_some() {
                        s.last_failed_version = known.clone();
                        s.last_failed_reason = Some(why.clone());
                    }
                    if trigger.is_some() {
                        s.reloads_failed += 1;
                        s.last_reload = Some(ReloadOutcome {
                            at_unix: unix(SystemTime::now()),
                            trigger: trigger_name,
                            ok: false,
                            version: None,
                            error: Some(why),
                        });
                    }
                });
                if trigger.is_some() {
                    self.metrics.reload(false);
                }
                Err(known)
            }
        }
    }

    /// Waits for the requests still holding the replaced model, then frees it (its sessions
    /// and worker threads) here rather than on whichever request happens to finish last.
    fn retire(&self, old: Arc<LoadedModel>) {
        let holders = engine::drain(&old, self.drain);
        if holders > 0 {
            log::warn!(
                "{holders} requests still hold the previous model after {:?}; it is freed when they end",
                self.drain
            );
        }
        drop(old);
        log::info!("the previous model version is released");
    }
}

/// Whether a fetch failed for what the URI holds (an archive or listing refused), which the
/// same version does again, rather than for a network or disk error of the moment.
fn lasting_fetch(e: &StorageError) -> bool {
    match e {
        StorageError::Archive(ArchiveError::Io { .. }) => false,
        StorageError::Archive(_) | StorageError::Invalid(_) => true,
        _ => false,
    }
}

/// Whether a load failed for what the version holds, so that every try fails the same way.
/// Not when the device or memory failed, nor when files are missing because another process
/// pruned the folder or a cleaner emptied it between the fetch and the load.
fn lasting_load(e: &ModelError, dir: &Path) -> bool {
    match e {
        ModelError::Config(_) | ModelError::Unsupported(_) => true,
        ModelError::Warmup(why) | ModelError::Parity(why) => !out_of_resources(why),
        ModelError::Load { path, message } => path.is_file() && !out_of_resources(message),
        // "no model file in the folder" is the content's only while the folder is there.
        ModelError::NotFound(_) => dir.is_dir(),
        ModelError::Device(_) => false,
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The model's name in metrics and logs, the same for every version at one URI: the URI's
/// last segment without its `.onnx` / `.tar.gz` / `.tgz` / `.tar` ending, or the segment before
/// it when that leaves the generic `model` (`s3://bucket/gender/model.tar.gz` is `gender`).
pub(super) fn stable_name(uri: &str) -> String {
    let path = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some((last, before)) = segments.split_last() else {
        return "model".into();
    };
    let stem = [".tar.gz", ".tgz", ".tar", ".onnx"]
        .iter()
        .find_map(|ext| last.strip_suffix(ext))
        .unwrap_or(last);
    match before.last() {
        Some(parent) if stem == "model" && stem != *last => (*parent).to_string(),
        _ => stem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_models_name_is_the_same_for_every_version_at_its_uri() {
        use super::stable_name;
        assert_eq!(stable_name("s3://bucket/gender/model.tar.gz"), "gender");
        assert_eq!(stable_name("s3://bucket/gender/v3/"), "v3");
        assert_eq!(stable_name("s3://bucket/xgb.onnx"), "xgb");
        assert_eq!(stable_name("/opt/ml/model"), "model");
        assert_eq!(stable_name("/srv/models/churn.tgz"), "churn");
        assert_eq!(stable_name("model.tar.gz"), "model");
        assert_eq!(stable_name("s3://bucket"), "bucket");
        assert_eq!(stable_name(""), "model");
    }

    use super::*;

    #[test]
    fn only_failures_of_the_content_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.onnx");
        std::fs::write(&file, b"x").unwrap();
        let load = |path: &Path, message: &str| ModelError::Load {
            path: path.to_path_buf(),
            message: message.into(),
        };
        let gone = dir.path().join("pruned");
        let cases = [
            (ModelError::Config("threshold".into()), dir.path(), true),
            (ModelError::Unsupported("shape".into()), dir.path(), true),
            (
                ModelError::Warmup("output \"y\" has 1 row".into()),
                dir.path(),
                true,
            ),
            (load(&file, "Protobuf parsing failed"), dir.path(), true),
            (
                ModelError::NotFound("no .onnx model file".into()),
                dir.path(),
                true,
            ),
            // The model file or its folder vanished (pruned by another process).
            (
                load(&gone.join("model.onnx"), "No such file"),
                dir.path(),
                false,
            ),
            (
                ModelError::NotFound("no .onnx model file".into()),
                &gone,
                false,
            ),
            // The device or memory.
            (
                ModelError::Device("--device cuda: no GPU".into()),
                dir.path(),
                false,
            ),
            (load(&file, "bad_alloc"), dir.path(), false),
            (
                ModelError::Warmup("CUDA failure 2: out of memory".into()),
                dir.path(),
                false,
            ),
        ];
        for (e, at, lasts) in cases {
            assert_eq!(lasting_load(&e, at), lasts, "{e}");
        }
        let io = |e: std::io::Error| ArchiveError::Io {
            path: "/x".into(),
            source: e,
        };
        assert!(!lasting_fetch(&StorageError::Archive(io(
            std::io::Error::other("disk full")
        ))));
        assert!(lasting_fetch(&StorageError::Archive(ArchiveError::Limit {
            archive: "/x".into(),
            why: "a bomb".into(),
        })));
        assert!(lasting_fetch(&StorageError::Invalid("a loop".into())));
        assert!(!lasting_fetch(&StorageError::Io {
            path: "/x".into(),
            source: std::io::Error::other("gone"),
        }));
    }
}
