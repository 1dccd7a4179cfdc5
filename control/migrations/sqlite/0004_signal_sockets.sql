-- Live signalling sockets (/v1/rtc), one row per participant session that
-- joined through one: the instance holding the socket pushes expires_at_ms
-- forward while it is open and deletes the row when the session ends. A row
-- whose time ran out belongs to an instance that died with the socket open:
-- the janitor ends that session (connection_lost), so no participant is
-- left behind as a ghost.
CREATE TABLE IF NOT EXISTS signal_sockets (
    sid           TEXT PRIMARY KEY,
    room_id       TEXT NOT NULL,
    identity      TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
