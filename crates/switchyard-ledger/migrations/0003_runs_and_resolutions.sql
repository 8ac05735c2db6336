-- v1.1: runs and operator resolutions. A migration runs once per database, so an existing
-- ledger gains the columns (defaults: the first run, an ordinary wait) on its next start.

-- The run of the command's current state: a later run reopens a terminal command.
ALTER TABLE commands ADD COLUMN run BIGINT NOT NULL DEFAULT 0;

-- The run a wait belongs to, and why it waits (`waiting` or `unknown`).
ALTER TABLE waits ADD COLUMN run BIGINT NOT NULL DEFAULT 0;
ALTER TABLE waits ADD COLUMN reason TEXT NOT NULL DEFAULT 'waiting';

-- Who ended an `unknown` command by hand, why, when and how: the audit trail of
-- `switchyard resolve`.
CREATE TABLE IF NOT EXISTS resolutions (
    command_id TEXT NOT NULL,
    run BIGINT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    resolved_by TEXT NOT NULL,
    resolved_at BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (command_id, run)
);
