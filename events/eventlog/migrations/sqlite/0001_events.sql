-- The embedded event log. One row per event; `position` is the global order.
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    occurred_at    TEXT    NOT NULL,
    -- The whole stored record (RawEvent as JSON, see schemas/events/envelope.json).
    record         TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, seq)
);
