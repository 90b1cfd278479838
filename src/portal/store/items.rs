//! Work items: claimed under a lease, renewed while scored, completed only by their holder.
//!
//! Every claim bumps the item's `claims`, which never goes down (resuming and giving back
//! reset or lower `attempts`, which counts towards `max_attempts`): a claim is fenced by its
//! own `claims` value, so a holder that lost its item can renew or complete nothing, even if
//! its replica claims the same item again later.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, parse_status, Backend, Store, StoreError};
use crate::portal::{ItemStatus, JobStatus};

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
    /// This claim's fence (the item's `claims` when it was taken).
    pub token: i64,
    pub owner: String,
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
    pub rows_ok: i64,
    pub bytes_total: i64,
    /// Input bytes scored: all of each ended item, and what running items reported.
    pub bytes_done: i64,
    pub running: i64,
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

const ITEM_COLUMNS: &str = "seq, input, output, size, status, attempts, lease_owner, rows_ok, \
     rows_failed, bytes_done, tally, error, started_at, ended_at";

impl Store {
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
             attempts = attempts + 1, claims = claims + 1, started_at = $3 \
             WHERE (job, seq) IN (SELECT i.job, i.seq FROM items i JOIN jobs j ON j.name = i.job \
               WHERE j.status IN ('Queued', 'InProgress') \
                 AND (i.status = 'queued' OR (i.status = 'running' AND i.lease_until < $3)) \
               ORDER BY j.created_at, i.job, i.seq LIMIT 1 {lock}) \
             RETURNING job, seq, input, output, attempts, claims"
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
            token: r.try_get(5)?,
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
             WHERE job = $4 AND seq = $5 AND lease_owner = $6 AND claims = $7 AND status = 'running'",
        )
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(rows as i64)
        .bind(bytes as i64)
        .bind(&c.job)
        .bind(c.seq)
        .bind(&c.owner)
        .bind(c.token)
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
             WHERE job = $8 AND seq = $9 AND lease_owner = $10 AND claims = $11 AND status = 'running'",
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
        .bind(c.token)
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
             WHERE job = $1 AND seq = $2 AND lease_owner = $3 AND claims = $4 AND status = 'running'",
        )
        .bind(&c.job)
        .bind(c.seq)
        .bind(&c.owner)
        .bind(c.token)
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
             CAST(COALESCE(SUM(rows_failed), 0) AS BIGINT), \
             CAST(COALESCE(SUM(rows_ok), 0) AS BIGINT), \
             CAST(COALESCE(SUM(size), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status IN ('done', 'failed') THEN size ELSE bytes_done END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM items WHERE job = $1",
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
            rows_ok: r.try_get(5)?,
            bytes_total: r.try_get(6)?,
            bytes_done: r.try_get(7)?,
            running: r.try_get(8)?,
            first_failure,
        })
    }

    /// The tallies of a job's finished items (read once, when the job finishes).
    pub async fn tallies(&self, job: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT tally FROM items WHERE job = $1 AND tally IS NOT NULL ORDER BY seq",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The first `limit` items, or the first `limit` in `status`, in order.
    pub async fn items(
        &self,
        job: &str,
        status: Option<ItemStatus>,
        limit: i64,
    ) -> Result<Vec<ItemRow>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE job = $1 AND ($2 IS NULL OR status = $2) \
             ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(job)
            .bind(status.map(ItemStatus::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(item_row).collect()
    }

    /// The replicas holding items of the job now.
    pub async fn holders(&self, job: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT lease_owner FROM items WHERE job = $1 AND status = 'running' \
             AND lease_owner IS NOT NULL ORDER BY lease_owner",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every item's output, in order (for an evaluation: only done items have one).
    pub async fn outputs(&self, job: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT output FROM items WHERE job = $1 AND status = 'done' ORDER BY seq",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?)
    }
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
    })
}
