//! A replica's share of the work: claim an item, score it while renewing the lease, complete
//! it only while the lease is still ours, and finish the job when its last item ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::lease::{renew, Ended, Lease};
use super::results::{self, Recorder, Tally};
use super::spec::{truncate, JobSpec, COMPARE_PREVIOUS};
use super::store::{Claimed, Outcome, Store, StoreError};
use super::{ItemStatus, JobStatus, Scoring};
use crate::engine::{self, LoadOptions, LoadedModel};
use crate::model::fetch::Fetcher;
use crate::storage::S3Store;
use crate::transform::{FileJob, Item, Place, Staging};

/// Models loaded for jobs, at most this many at once.
const MODELS_KEPT: usize = 2;

struct Loaded {
    uri: String,
    version: String,
    model: Arc<LoadedModel>,
    fetcher: Fetcher,
}

pub struct Workers {
    store: Store,
    replica: String,
    lease: Duration,
    poll: Duration,
    scoring: Scoring,
    models: tokio::sync::Mutex<Vec<Loaded>>,
    busy: AtomicUsize,
    counts: std::sync::Mutex<Option<Counts>>,
}

/// Jobs and items by status.
pub type Counts = (Vec<(String, i64)>, Vec<(String, i64)>);

impl Workers {
    pub fn new(
        store: Store,
        replica: String,
        lease: Duration,
        poll: Duration,
        scoring: Scoring,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            replica,
            lease,
            poll,
            scoring,
            models: tokio::sync::Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            counts: std::sync::Mutex::new(None),
        })
    }

    /// One item worker: claims and scores items until the portal shuts down.
    pub async fn run(self: Arc<Self>, n: usize, mut stop: watch::Receiver<bool>) {
        log::debug!("portal: item worker {n} started");
        while !*stop.borrow() {
            // Counted busy before the claim: a shutdown waits for a claim in flight too.
            self.busy.fetch_add(1, Ordering::SeqCst);
            let claimed = self.store.claim(&self.replica, self.lease).await;
            if let Ok(Some(c)) = claimed {
                self.item(c, stop.clone()).await;
                self.busy.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            self.busy.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = claimed {
                log::warn!("portal: cannot claim work: {e}");
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Items being scored now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// The last job and item counts (for `/metrics`, which must not wait on the store).
    pub fn counts(&self) -> Option<Counts> {
        self.counts.lock().ok().and_then(|c| c.clone())
    }

    /// Finishes jobs that nobody finished (a replica died between completing the last item
    /// and finishing the job, or a stopping job's last holder died), and counts jobs and
    /// items for `/metrics`.
    pub async fn sweep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = (self.poll * 5).max(Duration::from_secs(1));
        while !*stop.borrow() {
            match self.store.active_jobs().await {
                Ok(jobs) => {
                    for name in jobs {
                        if let Err(e) = settle(&self.store, &self.replica, &name).await {
                            log::warn!("portal: cannot settle job {name}: {e}");
                        }
                    }
                }
                Err(e) => log::warn!("portal: cannot list jobs: {e}"),
            }
            match self.store.counts().await {
                Ok(c) => {
                    if let Ok(mut slot) = self.counts.lock() {
                        *slot = Some(c);
                    }
                }
                Err(e) => log::warn!("portal: cannot count jobs: {e}"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn item(&self, c: Claimed, shutdown: watch::Receiver<bool>) {
        let label = format!("{} item {} ({})", c.job, c.seq, c.input);
        let lease = Lease::start(self.store.clone(), c.clone(), self.lease, shutdown);
        let scored = self.score(&c, &lease).await;
        let ended = lease.ended();
        drop(lease);
        let recorded = match (ended, scored) {
            // An output exists only after a lease check right before it was written: the item
            // is done, whatever was learnt since (the completion is fenced all the same).
            (_, Ok(Ok(result))) => self.finish(&c, Ok(result)).await,
            (Ended::Lost | Ended::Hung, _) => {
                log::warn!("portal: {label}: {ended:?}: the lease is another's or runs out; nothing is recorded");
                return;
            }
            // Stopped, shutting down, or the store failed us rather than the item: give it
            // back without spending an attempt.
            (Ended::Job | Ended::Shutdown | Ended::Store, _) | (Ended::No, Err(_)) => {
                log::info!("portal: {label}: given back unfinished ({ended:?})");
                self.store.release(&c).await.map(|()| true)
            }
            (Ended::No, Ok(Err(why))) => {
                log::error!("portal: {label}: failed: {why}");
                self.finish(&c, Err(why)).await
            }
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => log::warn!(
                "portal: {label}: the lease was lost before it completed; its result is dropped"
            ),
            Err(e) => log::error!("portal: {label}: cannot record the result: {e}"),
        }
        // Beside the next claim, not before it: the next item need not wait for this one's
        // bookkeeping.
        let (store, replica) = (self.store.clone(), self.replica.clone());
        tokio::spawn(async move {
            if let Err(e) = settle(&store, &replica, &c.job).await {
                log::warn!("portal: cannot settle job {}: {e}", c.job);
            }
        });
    }

    /// Records how an item ended, under its claim.
    async fn finish(
        &self,
        c: &Claimed,
        result: Result<(u64, Tally), String>,
    ) -> Result<bool, StoreError> {
        let tally = result
            .as_ref()
            .ok()
            .and_then(|(_, t)| serde_json::to_string(t).ok());
        let outcome = match &result {
            Ok((rows, t)) => Outcome {
                status: ItemStatus::Done,
                rows_ok: t.rows,
                rows_failed: rows.saturating_sub(t.rows),
                bytes_done: 0,
                tally: tally.as_deref(),
                error: None,
            },
            Err(why) => Outcome {
                status: ItemStatus::Failed,
                rows_ok: 0,
                rows_failed: 0,
                bytes_done: 0,
                tally: None,
                error: Some(why.as_str()),
            },
        };
        let done = self.store.finish_item(c, &outcome).await;
        // An earlier claim's writer may have died mid-write (claim tokens only go up).
        if matches!(done, Ok(true)) && c.token > 1 {
            if let Ok(Place::Local(out)) = Place::parse(&c.output) {
                let (tag, token) = (tag_prefix(c), c.token);
                let _ =
                    tokio::task::spawn_blocking(move || remove_stale_partials(&out, &tag, token))
                        .await;
            }
        }
        done
    }

    /// Scores a claimed item; `Err` only when the store failed (the item is not at fault).
    async fn score(
        &self,
        c: &Claimed,
        lease: &Lease,
    ) -> Result<Result<(u64, Tally), String>, StoreError> {
        let Some(job) = self.store.job(&c.job).await? else {
            return Ok(Err("the job was deleted".into()));
        };
        let spec = match JobSpec::parse(job.spec.as_bytes()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("the stored job is unreadable: {e}"))),
        };
        if job.status == JobStatus::Queued {
            self.store
                .transition(
                    &c.job,
                    &[JobStatus::Queued],
                    JobStatus::InProgress,
                    &self.replica,
                    "first item claimed",
                )
                .await?;
        }
        if c.attempts > i64::from(spec.max_attempts) {
            return Ok(Err(format!(
                "started {} times and never finished (max_attempts {}): the replicas scoring it died or hung",
                c.attempts - 1,
                spec.max_attempts
            )));
        }
        let checked = match spec.check() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let model = match self.model(&job.model_uri, &job.model_version).await {
            Ok(m) => m,
            Err(why) => return Ok(Err(why)),
        };
        let item = match (Place::parse(&c.input), Place::parse(&c.output)) {
            (Ok(input), Ok(output)) => Item {
                input,
                output,
                size: 0,
            },
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e.to_string())),
        };
        let recorder = Arc::new(Recorder::default());
        let file_job = FileJob {
            model,
            format: checked.format,
            accept: checked.accept,
            split: checked.split,
            placeholders: checked.bad_records == crate::batch::BadRecords::Placeholder,
            chunk_bytes: self.scoring.chunk_bytes,
            id_columns: spec.id_columns.clone(),
            observer: Some(Arc::clone(&recorder) as Arc<dyn crate::stream::Observer>),
            capture: self.scoring.capture.as_ref().map(|capture| {
                Arc::new(crate::monitor::Tap {
                    capture: Arc::clone(capture),
                    input_type: Arc::from(spec.content_type.as_str()),
                    output_type: Arc::from(checked.accept.mime()),
                    inference_id: None,
                })
            }),
        };
        let s3 = self.scoring.sources.s3.clone();
        let needs_s3 = item.input.is_s3() || item.output.is_s3();
        let tag = format!("{}{}.{}", tag_prefix(c), c.token, sanitize(&self.replica));
        let (seen, stop) = (Arc::clone(&lease.progress), lease.stop.clone());
        // The output appears only while the lease is ours: renewed (and checked) just before
        // the rename or the upload completes it.
        let (handle, store, claim, period) = (
            tokio::runtime::Handle::current(),
            self.store.clone(),
            c.clone(),
            self.lease,
        );
        let (state, marker) = (
            (Arc::clone(&lease.progress), lease.stop.clone()),
            lease.marker(),
        );
        let commit = move || -> Result<(), String> {
            if *state.1.borrow() {
                return Err("stopped before the output was written".into());
            }
            let (bytes, rows) = (
                state.0 .0.load(Ordering::Relaxed),
                state.0 .1.load(Ordering::Relaxed),
            );
            match handle.block_on(renew(&store, &claim, period, rows, bytes)) {
                Ok(Ended::No) => Ok(()),
                Ok(e) => {
                    marker.set(e);
                    Err(format!("not written: {e:?}"))
                }
                Err(e) => {
                    marker.set(Ended::Store);
                    Err(format!("not written: the lease cannot be checked: {e}"))
                }
            }
        };
        let scoring = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            let store = needs_s3.then(|| rt.block_on(S3Store::connect(&s3)));
            let staging = Staging {
                dir: std::env::temp_dir().join("mlapp-portal"),
                store: store.as_ref(),
                rt: &rt,
                writers: true,
            };
            let mut on_piece = |bytes: u64, rows: u64| {
                seen.0.fetch_add(bytes, Ordering::Relaxed);
                seen.1.fetch_add(rows, Ordering::Relaxed);
            };
            staging.transform(
                &file_job,
                &tag,
                &item,
                &mut on_piece,
                Some(stop),
                Some(&commit),
            )
        });
        let result = scoring
            .await
            .map_err(|e| format!("scoring the item failed: {e}"))
            .and_then(|r| r);
        Ok(result.map(|rows| (rows, recorder.take())))
    }

    /// The job's model at its pinned version, loaded once per replica.
    async fn model(&self, uri: &str, version: &str) -> Result<Arc<LoadedModel>, String> {
        let mut models = self.models.lock().await;
        if let Some(m) = models.iter().find(|m| m.uri == uri && m.version == version) {
            return Ok(Arc::clone(&m.model));
        }
        let fetcher = Fetcher::new(uri, self.scoring.sources.clone())
            .map_err(|e| format!("model {uri}: {e}"))?;
        // A local model is hashed to find its version: off the portal's threads.
        let handle = tokio::runtime::Handle::current();
        let (fetcher, fetched) = tokio::task::spawn_blocking(move || {
            let fetched = handle.block_on(fetcher.fetch());
            (fetcher, fetched)
        })
        .await
        .map_err(|e| format!("fetching the model failed: {e}"))?;
        let fetched = fetched.map_err(|e| format!("model {uri}: {e}"))?;
        if fetched.version != version {
            fetcher.release();
            return Err(format!(
                "the model at {uri} changed since the job was created (pinned {version}, found {}): \
                 create a new job to score with it",
                fetched.version
            ));
        }
        let opts = LoadOptions {
            sessions: self.scoring.sessions,
            cuda_sessions: engine::session::cuda_sessions(None, engine::session::visible_gpus()),
            intra_threads: 1,
            queue_capacity: 4 * self.scoring.sessions + 4,
            warmup_runs: 1,
            warmup_rows: 8,
            config_name: self.scoring.sources.config_name.clone(),
            max_batch_rows: 256,
            max_batch_delay: Duration::ZERO,
            inline_budget: Duration::ZERO,
            device: self.scoring.device,
            background: false,
        };
        let env = self.scoring.env;
        let dir = fetched.dir.clone();
        let model = tokio::task::spawn_blocking(move || {
            engine::load(env, &dir, &opts, Arc::new(crate::monitor::Metrics::new()))
        })
        .await
        .map_err(|e| format!("loading the model failed: {e}"))?
        .map_err(|e| format!("cannot load the model {uri}: {e}"))?;
        log::info!("portal: model {uri} ({version}) loaded for jobs");
        let model = Arc::new(model);
        if models.len() >= MODELS_KEPT {
            // The oldest no item is using goes.
            if let Some(i) = models.iter().position(|m| Arc::strong_count(&m.model) == 1) {
                let old = models.remove(i);
                old.model.engine.shutdown();
                old.fetcher.release();
            }
        }
        models.push(Loaded {
            uri: uri.to_string(),
            version: version.to_string(),
            model: Arc::clone(&model),
            fetcher,
        });
        Ok(model)
    }
}

/// Moves a job on when its items say so: a stopping job with no live item becomes Stopped; a
/// running job over its failure budget fails; a running job whose items have all ended
/// completes (or partly), with its results and comparison. Any replica may call it any
/// time; the conditional updates make each move happen once.
pub async fn settle(store: &Store, replica: &str, name: &str) -> Result<(), StoreError> {
    let Some(job) = store.job(name).await? else {
        return Ok(());
    };
    if !matches!(
        job.status,
        JobStatus::InProgress | JobStatus::Stopping | JobStatus::Queued
    ) {
        return Ok(());
    }
    let spec = match JobSpec::parse(job.spec.as_bytes()) {
        Ok(spec) => spec,
        Err(e) => {
            // Written by another mlapp version, perhaps: say so rather than leave it running.
            let why = format!("this mlapp cannot read the stored definition: {e}");
            let why = truncate(&why, 1024);
            let from = [
                JobStatus::InProgress,
                JobStatus::Queued,
                JobStatus::Stopping,
            ];
            store
                .finish_job(
                    name,
                    job.attempt,
                    &from,
                    JobStatus::Failed,
                    replica,
                    why,
                    None,
                    None,
                )
                .await?;
            return Ok(());
        }
    };
    let counts = store.counts_of(name).await?;
    let rows_failed = counts.rows_failed;
    let merged = || async {
        let tallies: Vec<Tally> = store
            .tallies(name)
            .await?
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect();
        Ok::<_, StoreError>(results::results(
            &tallies,
            rows_failed as u64,
            &job.model_version,
        ))
    };
    if job.status == JobStatus::Stopping {
        if counts.live == 0 {
            let results = merged().await?;
            store
                .finish_job(
                    name,
                    job.attempt,
                    &[JobStatus::Stopping],
                    JobStatus::Stopped,
                    replica,
                    &format!(
                        "stopped: {} of {} items done; their outputs are kept",
                        counts.done, counts.total
                    ),
                    Some(&results.to_string()),
                    None,
                )
                .await?;
        }
        return Ok(());
    }
    let over_files = counts.failed as u64 > spec.max_failed_files;
    let over_records = spec
        .max_failed_records
        .is_some_and(|m| rows_failed as u64 > m);
    if over_files || over_records {
        let first = counts
            .first_failure
            .as_ref()
            .map(|(input, error)| format!("; first: {input}: {}", error.as_deref().unwrap_or("")))
            .unwrap_or_default();
        let why = if over_files {
            format!(
                "{} files failed, more than max_failed_files {}{first}",
                counts.failed, spec.max_failed_files
            )
        } else {
            format!(
                "{rows_failed} records failed, more than max_failed_records {}",
                spec.max_failed_records.unwrap_or(0)
            )
        };
        store
            .finish_job(
                name,
                job.attempt,
                &[JobStatus::InProgress, JobStatus::Queued],
                JobStatus::Failed,
                replica,
                truncate(&why, 1024),
                None,
                None,
            )
            .await?;
        return Ok(());
    }
    if counts.done + counts.failed < counts.total {
        return Ok(());
    }
    let results = merged().await?;
    let comparison = compare(store, &job, &spec, &results).await?;
    let (to, why) = if counts.failed == 0 && rows_failed == 0 {
        (
            JobStatus::Completed,
            format!("all {} items done", counts.total),
        )
    } else {
        (
            JobStatus::PartiallyCompleted,
            format!(
                "{} items done, {} failed, {rows_failed} records failed: within the job's budgets",
                counts.done, counts.failed
            ),
        )
    };
    let moved = store
        .finish_job(
            name,
            job.attempt,
            &[JobStatus::InProgress, JobStatus::Queued],
            to,
            replica,
            &why,
            Some(&results.to_string()),
            comparison.as_ref().map(Value::to_string).as_deref(),
        )
        .await?;
    if moved {
        log::info!("portal: job {name} {}: {why}", to.as_str());
    }
    Ok(())
}

async fn compare(
    store: &Store,
    job: &super::store::JobRow,
    spec: &JobSpec,
    results: &Value,
) -> Result<Option<Value>, StoreError> {
    let Some(target) = spec.compare_to.as_deref() else {
        return Ok(None);
    };
    let base = if target == COMPARE_PREVIOUS {
        match spec.labels.get("series") {
            Some(series) => {
                store
                    .previous_in_series(series, job.created_at, &job.name)
                    .await?
            }
            None => None,
        }
    } else {
        store.job(target).await?
    };
    let base_results = base
        .as_ref()
        .and_then(|b| b.results.as_deref())
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    Ok(Some(match (base, base_results) {
        (Some(b), Some(r)) => results::compare(&b.name, &r, results, &spec.gates),
        (b, _) => serde_json::json!({
            "base": b.map(|b| b.name),
            "passed": Value::Null,
            "note": format!("nothing to compare with: {target} has no finished results"),
        }),
    }))
}

/// The start of an item's writer tags, `<job>.<seq>.`: '.' is in no job name, so the tag of
/// one item never starts like another's.
fn tag_prefix(c: &Claimed) -> String {
    format!("{}.{}.", c.job, c.seq)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' {
                ch
            } else {
                '_'
            }
        })
        .collect()
}

/// Removes `x.out.<job>.<seq>.<claim>.<replica>.partial` files of earlier claims of this item
/// (writers that died mid-write); a later claim's file, or another item's, is never touched.
fn remove_stale_partials(output: &std::path::Path, tag: &str, token: i64) {
    let (Some(dir), Some(name)) = (output.parent(), output.file_name().and_then(|n| n.to_str()))
    else {
        return;
    };
    let prefix = format!("{name}.{tag}");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name();
        let Some(rest) = n.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let earlier = rest
            .ends_with(".partial")
            .then(|| rest.split('.').next())
            .flatten()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t < token);
        if earlier && std::fs::remove_file(e.path()).is_ok() {
            log::info!(
                "portal: removed {}, left by a writer that died",
                e.path().display()
            );
        }
    }
}
