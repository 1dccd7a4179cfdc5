-- Read models of arc-control. Written only by projections; rebuildable from the log.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name          TEXT PRIMARY KEY,
    position      BIGINT NOT NULL,
    events        BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS rooms (
    room_id           TEXT PRIMARY KEY,
    app_id            TEXT NOT NULL,
    name              TEXT NOT NULL,
    state             TEXT NOT NULL,
    max_participants  BIGINT,
    empty_timeout_s   BIGINT NOT NULL,
    metadata          TEXT,
    participant_count BIGINT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    closed_at_ms      BIGINT,
    close_reason      TEXT,
    empty_since_ms    BIGINT,
    last_seq          BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS rooms_by_app_state ON rooms (app_id, state, room_id);
CREATE INDEX IF NOT EXISTS rooms_by_state ON rooms (state, room_id);

CREATE TABLE IF NOT EXISTS nodes (
    node_id           TEXT PRIMARY KEY,
    address           TEXT NOT NULL,
    public_ips        TEXT NOT NULL,
    arch              TEXT NOT NULL,
    cores             BIGINT NOT NULL,
    capacity          BIGINT NOT NULL,
    version           TEXT NOT NULL,
    state             TEXT NOT NULL,
    registered_at_ms  BIGINT NOT NULL,
    last_seen_ms      BIGINT NOT NULL,
    sessions          BIGINT NOT NULL,
    tracks            BIGINT NOT NULL,
    bits_in_per_s     BIGINT NOT NULL,
    bits_out_per_s    BIGINT NOT NULL,
    cpu_percent       DOUBLE PRECISION NOT NULL,
    last_seq          BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_by_state ON nodes (state, node_id);
