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

/// A work item as stored.
#[derive(Clone, Debug)]
pub struct ItemRow {
    pub seq: i64,
    pub input: String,
    pub output: String,
    pub size: i64,
    pub status: ItemStatus,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub rows_ok: i64,
    pub rows_failed: i64,
    pub bytes_done: i64,
    pub tally: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

/// An item this replica holds the lease of. `attempts` fences it: a later claim of the same
/// item bumps it, and every write below names it.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub job: String,
    pub seq: i64,
    pub input: String,
    pub output: String,
    pub attempts: i64,
    pub owner: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    pub at: i64,
    pub from: Option<String>,
    pub to: String,
    pub replica: String,
    pub reason: String,
}

/// A job's items by state.
#[derive(Debug)]
pub struct ItemCounts {
    pub total: i64,
    /// Running under a lease that has not run out.
    pub live: i64,
    pub done: i64,
    pub failed: i64,
    pub rows_failed: i64,
    /// The first failed item's input and error.
    pub first_failure: Option<(String, Option<String>)>,
}

/// How an item ended.
pub struct Outcome<'a> {
    pub status: ItemStatus,
    pub rows_ok: u64,
    pub rows_failed: u64,
    pub bytes_done: u64,
    pub tally: Option<&'a str>,
    pub error: Option<&'a str>,
}

const JOB_COLUMNS: &str = "name, spec, status, reason, attempt, model_uri, model_version, labels, \
     created_at, started_at, ended_at, updated_at, results, comparison, evaluation";
const ITEM_COLUMNS: &str = "seq, input, output, size, status, attempts, lease_owner, rows_ok, \
     rows_failed, bytes_done, tally, error, started_at, ended_at, lease_until";

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
        let sql = if self.backend == Backend::Postgres {
            "INSERT INTO jobs (name, spec, status, attempt, model_uri, model_version, series, \
             labels, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (name) DO NOTHING"
        } else {
            "INSERT OR IGNORE INTO jobs (name, spec, status, attempt, model_uri, model_version, \
             series, labels, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $8)"
        };
        let inserted = sqlx::query(sql)
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
                "INSERT INTO items (job, seq, input, output, size, status, attempts, rows_ok, \
                 rows_failed, bytes_done) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, 0)",
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
        let moved = move_job(&mut tx, name, from, to, replica, reason, None).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Resume: a `Failed` or `Stopped` job goes back to `Queued` with its unfinished and
    /// failed items queued again (finished items keep their output), and its attempt counted.
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
        )
        .await?;
        if moved {
            sqlx::query(
                "UPDATE items SET status = $1, attempts = 0, lease_owner = NULL, \
                 lease_until = NULL, error = NULL, rows_ok = 0, rows_failed = 0, bytes_done = 0, \
                 tally = NULL WHERE job = $2 AND status <> $3",
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

    /// Claims the next runnable item of any running job (oldest job first): a queued item, or
    /// one whose lease ran out (its replica died or hangs). Attempts count up; the caller
    /// gives up on an item past its job's limit.
    pub async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claimed>, StoreError> {
        let now = now_ms();
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE OF i SKIP LOCKED",
            // One writer at a time: the statement is atomic as it is.
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE items SET status = 'running', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, started_at = $3 \
             WHERE (job, seq) IN (SELECT i.job, i.seq FROM items i JOIN jobs j ON j.name = i.job \
               WHERE j.status IN ('Queued', 'InProgress') \
                 AND (i.status = 'queued' OR (i.status = 'running' AND i.lease_until < $3)) \
               ORDER BY j.created_at, i.job, i.seq LIMIT 1 {lock}) \
             RETURNING job, seq, input, output, attempts"
        );
        let row = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Claimed {
            job: r.try_get(0)?,
            seq: r.try_get(1)?,
            input: r.try_get(2)?,
            output: r.try_get(3)?,
            attempts: r.try_get(4)?,
            owner: owner.to_string(),
        }))
    }

    /// Extends the lease and records progress. `Some(status of the job)` while the lease is
    /// held; `None` once it was lost (expired and claimed by another replica).
    pub async fn renew(
        &self,
        c: &Claimed,
        lease: Duration,
        rows: u64,
        bytes: u64,
    ) -> Result<Option<JobStatus>, StoreError> {
        let held = sqlx::query(
            "UPDATE items SET lease_until = $1, rows_ok = $2, bytes_done = $3 \
             WHERE job = $4 AND seq = $5 AND lease_owner = $6 AND attempts = $7 AND status = 'running'",
        )
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(rows as i64)
        .bind(bytes as i64)
        .bind(&c.job)
        .bind(c.seq)
        .bind(&c.owner)
        .bind(c.attempts)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if held == 0 {
            return Ok(None);
        }
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE name = $1")
            .bind(&c.job)
            .fetch_optional(&self.pool)
            .await?;
        status.map(|s| parse_status(&s)).transpose()
    }

    /// Ends a held item; false when the lease was lost, and then nothing is written.
    pub async fn finish_item(&self, c: &Claimed, o: &Outcome<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query(
            "UPDATE items SET status = $1, rows_ok = $2, rows_failed = $3, bytes_done = $4, \
             tally = $5, error = $6, ended_at = $7, lease_until = NULL \
             WHERE job = $8 AND seq = $9 AND lease_owner = $10 AND attempts = $11 AND status = 'running'",
        )
        .bind(o.status.as_str())
        .bind(o.rows_ok as i64)
        .bind(o.rows_failed as i64)
        .bind(o.bytes_done as i64)
        .bind(o.tally)
        .bind(o.error)
        .bind(now_ms())
        .bind(&c.job)
        .bind(c.seq)
        .bind(&c.owner)
        .bind(c.attempts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(held == 1)
    }

    /// Gives a held item back unfinished (the job is stopping or failed): queued again, its
    /// attempt not counted.
    pub async fn release(&self, c: &Claimed) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE items SET status = 'queued', attempts = attempts - 1, lease_owner = NULL, \
             lease_until = NULL, rows_ok = 0, bytes_done = 0 \
             WHERE job = $1 AND seq = $2 AND lease_owner = $3 AND attempts = $4 AND status = 'running'",
        )
        .bind(&c.job)
        .bind(c.seq)
        .bind(&c.owner)
        .bind(c.attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A job's items counted by state, without reading them (settling runs after every item).
    pub async fn counts_of(&self, job: &str) -> Result<ItemCounts, StoreError> {
        // Sums of BIGINT are NUMERIC on PostgreSQL, which `Any` cannot carry: cast back.
        let r = sqlx::query(
            "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN status = 'running' AND lease_until > $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(rows_failed), 0) AS BIGINT) FROM items WHERE job = $1",
        )
        .bind(job)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        let first_failure = sqlx::query(
            "SELECT input, error FROM items WHERE job = $1 AND status = 'failed' ORDER BY seq LIMIT 1",
        )
        .bind(job)
        .fetch_optional(&self.pool)
        .await?
        .map(|f| -> Result<(String, Option<String>), sqlx::Error> { Ok((f.try_get(0)?, f.try_get(1)?)) })
        .transpose()?;
        Ok(ItemCounts {
            total: r.try_get(0)?,
            live: r.try_get(1)?,
            done: r.try_get(2)?,
            failed: r.try_get(3)?,
            rows_failed: r.try_get(4)?,
            first_failure,
        })
    }

    /// The tallies of a job's finished items (read once, when the job finishes).
    pub async fn tallies(&self, job: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT tally FROM items WHERE job = $1 AND tally IS NOT NULL ORDER BY seq")
            .bind(job)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn items(&self, job: &str) -> Result<Vec<ItemRow>, StoreError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE job = $1 ORDER BY seq");
        let rows = sqlx::query(&sql).bind(job).fetch_all(&self.pool).await?;
        rows.iter().map(item_row).collect()
    }

    /// Finishes a job whose items are all terminal, or that ran over its failure budget:
    /// moves it from `from` to `to` with its results and comparison, once (false when another
    /// replica did it first).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_job(
        &self,
        name: &str,
        from: &[JobStatus],
        to: JobStatus,
        replica: &str,
        reason: &str,
        results: Option<&str>,
        comparison: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = move_job(&mut tx, name, from, to, replica, reason, Some(now_ms())).await?;
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

async fn move_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
    from: &[JobStatus],
    to: JobStatus,
    replica: &str,
    reason: &str,
    ended: Option<i64>,
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
         WHERE name = $2 AND status IN ({list}) RETURNING status"
    );
    let moved = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(name)
        .bind(now)
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

fn item_row(r: &AnyRow) -> Result<ItemRow, StoreError> {
    let status: String = r.try_get(4)?;
    Ok(ItemRow {
        seq: r.try_get(0)?,
        input: r.try_get(1)?,
        output: r.try_get(2)?,
        size: r.try_get(3)?,
        status: ItemStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            what: "item status",
            why: format!("{status:?}"),
        })?,
        attempts: r.try_get(5)?,
        lease_owner: r.try_get(6)?,
        rows_ok: r.try_get(7)?,
        rows_failed: r.try_get(8)?,
        bytes_done: r.try_get(9)?,
        tally: r.try_get(10)?,
        error: r.try_get(11)?,
        started_at: r.try_get(12)?,
        ended_at: r.try_get(13)?,
        lease_until: r.try_get(14)?,
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
