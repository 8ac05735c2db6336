-- Commands waiting for a long-running provider, and how each ended: the resolver's state.
-- `resolution` is the terminal event, written once; `resolved_by` names what decided it, so a
-- redelivered decision republishes the same event instead of deciding again.
CREATE TABLE IF NOT EXISTS waits (
    command_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    resolution TEXT,
    resolved_by TEXT,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS waits_by_reference ON waits (provider, reference);

-- Every webhook id processed per provider: the same id again has no effect.
CREATE TABLE IF NOT EXISTS webhook_receipts (
    provider TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, webhook_id)
);
