//! The job store: SQLite in the state folder by default, PostgreSQL when replicas share jobs.
//! One schema and one set of statements serve both (sqlx's `Any` driver, `$n` parameters,
//! which SQLite takes too); only claiming differs, by PostgreSQL's `FOR UPDATE SKIP LOCKED`.
//!
//! Every state change is a conditional `UPDATE ... WHERE status = <expected>` written with
//! its event in one transaction, so two replicas racing for the same change cannot both make
//! it. Transactions write first: SQLite then takes its write lock at once (waiting out a busy
//! writer) instead of failing to upgrade a read lock.

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod items;

pub use items::{Claimed, ItemCounts, ItemRow, Outcome};

use super::{ItemStatus, JobStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job store: {0}")]
    Config(String),
    #[error("job store: a stored {what} is unreadable: {why}")]
    Corrupt { what: &'static str, why: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/0001_jobs.sql"))];

/// PostgreSQL advisory lock key held while migrating, so replicas starting together migrate
/// once.
const MIGRATION_LOCK: i64 = 0x6d6c_6170_7000;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A job as stored.
#[derive(Clone, Debug)]
pub struct JobRow {
    pub name: String,
    pub spec: String,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub attempt: i64,
    pub model_uri: String,
    pub model_version: String,
    pub labels: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub updated_at: i64,
    pub results: Option<String>,
    pub comparison: Option<String>,
    pub evaluation: Option<String>,
}

/// A work item to insert.
pub struct NewItem {
    pub input: String,
    pub output: String,
    pub size: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    pub at: i64,
    pub from: Option<String>,
    pub to: String,
    pub replica: String,
    pub reason: String,
}

const JOB_COLUMNS: &str = "name, spec, status, reason, attempt, model_uri, model_version, labels, \
     created_at, started_at, ended_at, updated_at, results, comparison, evaluation";
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config(format!(
                "MLAPP_DB_URL must start with sqlite: or postgres://, got {:?}",
                redact(url)
            )));
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Readers never wait for the writer in WAL mode; a second writer waits
                        // (up to 10 s) instead of failing at once.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Counted, not returned: `Any` cannot carry PostgreSQL's `void`.
            sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_lock($1)) AS l")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS mlapp_migrations (version BIGINT PRIMARY KEY, \
                 applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            for (version, sql) in MIGRATIONS {
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM mlapp_migrations WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *conn)
                        .await?;
                if done.is_some() {
                    continue;
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for statement in sql.split(';').map(strip_comments) {
                    if !statement.is_empty() {
                        sqlx::query(&statement).execute(&mut *tx).await?;
                    }
                }
                sqlx::query("INSERT INTO mlapp_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                log::info!("job store: schema migration {version} applied");
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        Ok(result?)
    }

    /// Inserts a job in `Created` with its items; `None` when the name is taken (the caller
    /// then compares specs).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_job(
        &self,
        name: &str,
        spec: &str,
        model_uri: &str,
        model_version: &str,
        series: Option<&str>,
        labels: &str,
        items: &[NewItem],
        replica: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (name, spec, status, attempt, model_uri, model_version, series, \
             labels, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(spec)
        .bind(JobStatus::Created.as_str())
        .bind(model_uri)
        .bind(model_version)
        .bind(series)
        .bind(labels)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        for (seq, item) in items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO items (job, seq, input, output, size, status, attempts, claims, \
                 rows_ok, rows_failed, bytes_done) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, 0, 0)",
            )
            .bind(name)
            .bind(seq as i64)
            .bind(&item.input)
            .bind(&item.output)
            .bind(item.size as i64)
            .bind(ItemStatus::Queued.as_str())
            .execute(&mut *tx)
            .await?;
        }
        event(
            &mut tx,
            name,
            None,
            JobStatus::Created,
            replica,
            "created",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn job(&self, name: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_row(&r)).transpose()
    }

    /// Jobs, newest first, with the given status and series (when given).
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        series: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 IS NULL OR status = $1) \
             AND ($2 IS NULL OR series = $2) ORDER BY created_at DESC, name LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(status.map(|s| s.as_str()))
            .bind(series)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// Jobs that are queued, running or stopping, oldest first (for the sweep: a job resumed
    /// with nothing left to claim is finished there).
    pub async fn active_jobs(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM jobs WHERE status IN ('Queued', 'InProgress', 'Stopping') \
             ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest job of `series` created before `before`, that finished with results.
    pub async fn previous_in_series(
        &self,
        series: &str,
        before: i64,
        name: &str,
    ) -> Result<Option<JobRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE series = $1 AND created_at <= $2 AND name <> $3 \
             AND results IS NOT NULL AND status IN ('Completed', 'PartiallyCompleted') \
             ORDER BY created_at DESC, name DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(series)
            .bind(before)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_row(&r)).transpose()
    }

    /// Moves a job from one of `from` to `to`, with its event; false when it was in none of
    /// them (another replica moved it first).
    pub async fn transition(
        &self,
        name: &str,
        from: &[JobStatus],
        to: JobStatus,
        replica: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = move_job(&mut tx, name, from, to, replica, reason, None, None).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Resume: a `Failed` or `Stopped` job goes back to `Queued` with its unfinished and
    /// failed items queued again, and those whose records got placeholders (finished items keep
    /// their output), and its attempt counted.
    pub async fn resume(
        &self,
        name: &str,
        from: &[JobStatus],
        replica: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = move_job(
            &mut tx,
            name,
            from,
            JobStatus::Queued,
            replica,
            "resumed: unfinished items queued again",
            None,
            None,
        )
        .await?;
        if moved {
            sqlx::query(
                "UPDATE items SET status = $1, attempts = 0, lease_owner = NULL, \
                 lease_until = NULL, error = NULL, rows_ok = 0, rows_failed = 0, bytes_done = 0, \
                 tally = NULL WHERE job = $2 AND (status <> $3 OR rows_failed > 0)",
            )
            .bind(ItemStatus::Queued.as_str())
            .bind(name)
            .bind(ItemStatus::Done.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET attempt = attempt + 1, ended_at = NULL, results = NULL, \
                 comparison = NULL, reason = NULL WHERE name = $1",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// A first invoke: `Created` → `Queued`, attempt 1.
    pub async fn queue(&self, name: &str, replica: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = move_job(
            &mut tx,
            name,
            &[JobStatus::Created],
            JobStatus::Queued,
            replica,
            "invoked",
            None,
            None,
        )
        .await?;
        if moved {
            sqlx::query("UPDATE jobs SET attempt = 1 WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Finishes a job whose items are all terminal, or that ran over its failure budget:
    /// moves it from `from` to `to` with its results and comparison, once (false when another
    /// replica did it first). `attempt` is the run the caller looked at: a job resumed since
    /// is not finished on an old reading.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_job(
        &self,
        name: &str,
        attempt: i64,
        from: &[JobStatus],
        to: JobStatus,
        replica: &str,
        reason: &str,
        results: Option<&str>,
        comparison: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = Some(now_ms());
        let moved = move_job(&mut tx, name, from, to, replica, reason, at, Some(attempt)).await?;
        if moved {
            sqlx::query(
                "UPDATE jobs SET results = $1, comparison = $2, reason = $3 WHERE name = $4",
            )
            .bind(results)
            .bind(comparison)
            .bind(reason)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    pub async fn set_evaluation(&self, name: &str, evaluation: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET evaluation = $1, updated_at = $2 WHERE name = $3")
            .bind(evaluation)
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn events(&self, job: &str) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, from_status, to_status, replica, reason FROM events WHERE job = $1 \
             ORDER BY seq",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: r.try_get(0)?,
                    from: r.try_get(1)?,
                    to: r.try_get(2)?,
                    replica: r.try_get(3)?,
                    reason: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Jobs and items by status, over the whole store (for `/metrics`).
    pub async fn counts(&self) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), StoreError> {
        let pairs = |rows: Vec<AnyRow>| -> Result<Vec<(String, i64)>, sqlx::Error> {
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        };
        let jobs = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let items = sqlx::query("SELECT status, COUNT(*) FROM items GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        Ok((pairs(jobs)?, pairs(items)?))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn move_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
    from: &[JobStatus],
    to: JobStatus,
    replica: &str,
    reason: &str,
    ended: Option<i64>,
    attempt: Option<i64>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    // The statuses are our own constants, never input: safe to write into the statement.
    let list = from
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let started = if to == JobStatus::InProgress {
        ", started_at = COALESCE(started_at, $3)"
    } else {
        ""
    };
    let ended_sql = if ended.is_some() {
        ", ended_at = $3"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE jobs SET status = $1, updated_at = $3{started}{ended_sql} \
         WHERE name = $2 AND status IN ({list}) AND ($4 IS NULL OR attempt = $4) RETURNING status"
    );
    let moved = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(name)
        .bind(now)
        .bind(attempt)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if !moved {
        return Ok(false);
    }
    // The job's row is locked by the update above: its events are numbered without a race.
    let from_status: Option<String> =
        sqlx::query_scalar("SELECT to_status FROM events WHERE job = $1 ORDER BY seq DESC LIMIT 1")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
    event(tx, name, from_status.as_deref(), to, replica, reason, now).await?;
    Ok(true)
}

async fn event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job: &str,
    from: Option<&str>,
    to: JobStatus,
    replica: &str,
    reason: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (job, seq, at, from_status, to_status, replica, reason) \
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job = $1), $2, $3, $4, $5, $6)",
    )
    .bind(job)
    .bind(at)
    .bind(from)
    .bind(to.as_str())
    .bind(replica)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn parse_status(s: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(s).ok_or_else(|| StoreError::Corrupt {
        what: "job status",
        why: format!("{s:?}"),
    })
}

fn job_row(r: &AnyRow) -> Result<JobRow, StoreError> {
    let status: String = r.try_get(2)?;
    Ok(JobRow {
        name: r.try_get(0)?,
        spec: r.try_get(1)?,
        status: parse_status(&status)?,
        reason: r.try_get(3)?,
        attempt: r.try_get(4)?,
        model_uri: r.try_get(5)?,
        model_version: r.try_get(6)?,
        labels: r.try_get(7)?,
        created_at: r.try_get(8)?,
        started_at: r.try_get(9)?,
        ended_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        results: r.try_get(12)?,
        comparison: r.try_get(13)?,
        evaluation: r.try_get(14)?,
    })
}

fn strip_comments(statement: &str) -> String {
    statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
