-- What the running daemon last said about itself, for `syncd status` (read-only reader).
CREATE TABLE daemon_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    pid         INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    state       TEXT NOT NULL,          -- starting | running | stopping | stopped
    detail      TEXT NOT NULL DEFAULT '{}'  -- JSON: listener and counters
);
