-- One schema for SQLite and PostgreSQL: ids as TEXT, times as BIGINT unix milliseconds,
-- JSON as TEXT, flags as BIGINT.

CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    operation TEXT NOT NULL,
    status TEXT NOT NULL,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    provider_reference TEXT,
    result TEXT,
    error TEXT,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_by_created ON commands (created_at, id);
CREATE INDEX IF NOT EXISTS commands_by_status ON commands (status, created_at);
CREATE INDEX IF NOT EXISTS commands_by_provider ON commands (kind, provider, created_at);

CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_command ON events (command_id, seq);

CREATE TABLE IF NOT EXISTS attempts (
    record_id TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    record TEXT NOT NULL,
    pruned BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS attempts_by_command ON attempts (command_id, started_at);
CREATE INDEX IF NOT EXISTS attempts_by_started ON attempts (started_at, pruned);
