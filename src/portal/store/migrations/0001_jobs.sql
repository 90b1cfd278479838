-- The portal's jobs, their work items and their history. The same text runs on SQLite and
-- PostgreSQL: times are epoch milliseconds (BIGINT) and documents JSON text, the types both
-- carry alike.
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    attempt BIGINT NOT NULL,
    model_uri TEXT NOT NULL,
    model_version TEXT NOT NULL,
    series TEXT,
    labels TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    updated_at BIGINT NOT NULL,
    results TEXT,
    comparison TEXT,
    evaluation TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_series ON jobs (series, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS items (
    job TEXT NOT NULL,
    seq BIGINT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    size BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    claims BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    started_at BIGINT,
    ended_at BIGINT,
    rows_ok BIGINT NOT NULL,
    rows_failed BIGINT NOT NULL,
    bytes_done BIGINT NOT NULL,
    tally TEXT,
    error TEXT,
    PRIMARY KEY (job, seq)
);
CREATE INDEX IF NOT EXISTS items_to_claim ON items (status, job, seq);
CREATE TABLE IF NOT EXISTS events (
    job TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    replica TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (job, seq)
)
