//! What `check` and `list` answer: a job's state, progress, first failures, history, results
//! and comparison, from its stored rows.

use serde_json::{json, Value};

use super::store::{now_ms, Event, ItemCounts, ItemRow, JobRow};

/// Failures listed in `check`, as Vertex AI's `partialFailures` (the rest are counted).
pub const FAILURES_SHOWN: i64 = 20;

/// Items listed in `check` (the counts cover all of them).
pub const ITEMS_SHOWN: i64 = 1000;

/// What `check` shows of a job. `items` are its first items, `failed` its first failed ones.
pub fn describe(
    job: &JobRow,
    counts: &ItemCounts,
    items: &[ItemRow],
    failed: &[ItemRow],
    holders: &[String],
    events: &[Event],
) -> Value {
    let spec: Value = serde_json::from_str(&job.spec).unwrap_or(Value::Null);
    let mut v = summary_of(job, &spec);
    let elapsed_ms = match (job.started_at, job.ended_at) {
        (Some(s), Some(e)) => e - s,
        (Some(s), None) => now_ms() - s,
        _ => 0,
    };
    let secs = elapsed_ms as f64 / 1000.0;
    let rows_per_s = if secs > 0.0 {
        Some(counts.rows_ok as f64 / secs)
    } else {
        None
    };
    let (total, done) = (
        counts.bytes_total,
        counts.bytes_done.min(counts.bytes_total),
    );
    let eta_s = if job.status.terminal() {
        Some(0.0)
    } else if secs > 0.0 && done > 0 {
        Some(secs * (total - done) as f64 / done as f64)
    } else {
        None
    };
    let failures: Vec<Value> = failed
        .iter()
        .map(|i| json!({"input": i.input, "attempts": i.attempts, "error": i.error}))
        .collect();
    v["spec"] = spec;
    v["progress"] = json!({
        "items_total": counts.total,
        "items_done": counts.done,
        "items_failed": counts.failed,
        "items_running": counts.running,
        "items_queued": counts.total - counts.done - counts.failed - counts.running,
        "records_ok": counts.rows_ok,
        "records_failed": counts.rows_failed,
        "bytes_total": total,
        "bytes_done": done,
        "rows_per_s": rows_per_s,
        "eta_s": eta_s,
    });
    v["failures"] = json!(failures);
    v["failures_total"] = json!(counts.failed);
    v["replicas"] = json!(holders);
    v["events"] = json!(events
        .iter()
        .map(|e| json!({"at": iso(e.at), "from": e.from, "to": e.to, "replica": e.replica, "reason": e.reason}))
        .collect::<Vec<_>>());
    v["items"] = json!(items
        .iter()
        .map(|i| json!({"input": i.input, "output": i.output, "status": i.status.as_str(),
                        "attempts": i.attempts, "records_ok": i.rows_ok, "records_failed": i.rows_failed,
                        "replica": i.lease_owner,
                        "started_at": i.started_at.map(iso), "ended_at": i.ended_at.map(iso)}))
        .collect::<Vec<_>>());
    let parse = |s: &Option<String>| -> Value {
        s.as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null)
    };
    v["results"] = parse(&job.results);
    v["comparison"] = parse(&job.comparison);
    v["evaluation"] = parse(&job.evaluation);
    v
}

/// The fields of a job that `list` shows.
pub fn summary(job: &JobRow) -> Value {
    summary_of(job, &serde_json::from_str(&job.spec).unwrap_or(Value::Null))
}

fn summary_of(job: &JobRow, spec: &Value) -> Value {
    let labels: Value = serde_json::from_str(&job.labels).unwrap_or(json!({}));
    json!({
        "name": job.name,
        "status": job.status.as_str(),
        "reason": job.reason,
        "attempt": job.attempt,
        "model": {"uri": job.model_uri, "version": job.model_version},
        "input": spec["input"],
        "output": spec["output"],
        "labels": labels,
        "created_at": iso(job.created_at),
        "started_at": job.started_at.map(iso),
        "ended_at": job.ended_at.map(iso),
        "updated_at": iso(job.updated_at),
        "check": format!("/api/providers/prediction/check?name={}", job.name),
    })
}

/// Epoch milliseconds as RFC 3339 UTC (`2026-12-02T11:28:53.123Z`).
pub fn iso(ms: i64) -> String {
    let c = crate::monitor::capture::Civil::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
    )
}

#[cfg(test)]
mod tests {
    use super::iso;

    #[test]
    fn iso_times_match_known_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796210933 +%FT%T` = 2026-12-02T11:28:53
        assert_eq!(iso(1_796_210_933_123), "2026-12-02T11:28:53.123Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
