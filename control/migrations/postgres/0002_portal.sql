-- Read models of the portal: apps, participants, tracks, revoked tokens.
CREATE TABLE IF NOT EXISTS apps (
    app_id                    TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    state                     TEXT NOT NULL,
    disabled_reason           TEXT,
    secret_sealed             TEXT,
    previous_sealed           TEXT,
    previous_valid_until_ms   BIGINT,
    max_rooms                 BIGINT,
    max_participants_per_room BIGINT,
    max_participants          BIGINT,
    webhooks                  TEXT NOT NULL,
    created_at_ms             BIGINT NOT NULL,
    updated_at_ms             BIGINT NOT NULL,
    last_seq                  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS participants (
    sid           TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL,
    identity      TEXT NOT NULL,
    name          TEXT,
    metadata      TEXT,
    permissions   TEXT,
    jti           TEXT,
    node_id       TEXT,
    state         TEXT NOT NULL,
    left_reason   TEXT,
    joined_at_ms  BIGINT NOT NULL,
    left_at_ms    BIGINT
);
CREATE INDEX IF NOT EXISTS participants_by_room ON participants (room_id, state, identity);

CREATE TABLE IF NOT EXISTS tracks (
    track_id          TEXT PRIMARY KEY,
    room_id           TEXT NOT NULL,
    identity          TEXT NOT NULL,
    sid               TEXT NOT NULL,
    kind              TEXT NOT NULL,
    source            TEXT NOT NULL,
    codec             TEXT NOT NULL,
    simulcast         BIGINT NOT NULL,
    muted             BIGINT NOT NULL,
    muted_by          TEXT,
    state             TEXT NOT NULL,
    published_at_ms   BIGINT NOT NULL,
    unpublished_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS tracks_by_room ON tracks (room_id, state, identity);

CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti           TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT NOT NULL,
    reason        TEXT
);
