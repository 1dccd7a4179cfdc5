-- Resuming a signalling session (/v1/rtc?resume=…): a socket that drops
-- without `leave` keeps its participant for the resume window (its row's
-- time is set to that); a client that comes back with the session's resume
-- token within it takes the session over. `resume_hash`: SHA-256 (hex) of
-- the token's secret, replaced at each take-over. `holder`: the socket that
-- holds the session now (a random id per socket); a socket that finds
-- another holder in the row stands down without leaving.
ALTER TABLE signal_sockets ADD COLUMN resume_hash TEXT;
ALTER TABLE signal_sockets ADD COLUMN holder TEXT;
