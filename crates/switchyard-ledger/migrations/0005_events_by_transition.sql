-- Issue 15: an event is kept once per transition, (command_id, seq, status), of which its
-- event_id is a UUIDv5 (contract: the same transition always has the same id). The key was
-- the event_id itself: a random key, so every event written dirtied a page of the key's
-- index at random, and a batch of 500 events rewrote about 500 pages. Keyed by transition,
-- a command's events sit together, beside the command's other rows.
CREATE TABLE events_by_transition (
    event_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (command_id, seq, status)
);
-- The key also serves a command's history (`WHERE command_id = ? ORDER BY seq`), which
-- had an index of its own. A publisher outside the contract could have sent one transition
-- under two ids: one of them is kept. (`WHERE true`: SQLite needs a WHERE before an upsert
-- clause on INSERT ... SELECT.)
INSERT INTO events_by_transition (event_id, command_id, seq, status, occurred_at, body)
    SELECT event_id, command_id, seq, status, occurred_at, body FROM events WHERE true
    ON CONFLICT (command_id, seq, status) DO NOTHING;
DROP TABLE events;
ALTER TABLE events_by_transition RENAME TO events;
