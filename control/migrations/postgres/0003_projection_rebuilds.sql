-- Online rebuild requests (POST /v1/projections/{name}/rebuild): the
-- projection's writer, on whichever instance holds its lease, empties the
-- read model, resets its checkpoint and deletes the request in one
-- transaction, then replays the log from the start.
CREATE TABLE IF NOT EXISTS projection_rebuilds (
    name            TEXT PRIMARY KEY,
    requested_at_ms BIGINT NOT NULL
);
