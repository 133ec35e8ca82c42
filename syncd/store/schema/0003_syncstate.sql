-- IMAP sync cursors: one row per (inbox, folder), written in the same transaction as the
-- mail it covers, and one row per inbox with its last known state for `syncd status`.
CREATE TABLE sync_folders (
    inbox            TEXT NOT NULL,
    folder           TEXT NOT NULL,         -- decoded folder name (not modified UTF-7)
    uidvalidity      INTEGER NOT NULL,
    last_uid         INTEGER NOT NULL DEFAULT 0,
    highestmodseq    INTEGER,
    initial_done     INTEGER NOT NULL DEFAULT 0 CHECK (initial_done IN (0, 1)),
    initial_started  TEXT,                  -- ISO 8601: when the past sync began
    logged           INTEGER NOT NULL DEFAULT 0,
    duplicates       INTEGER NOT NULL DEFAULT 0,
    skipped          INTEGER NOT NULL DEFAULT 0,
    quarantined      INTEGER NOT NULL DEFAULT 0,
    last_sync        TEXT,                  -- ISO 8601 UTC of the last committed checkpoint
    last_error       TEXT,
    PRIMARY KEY (inbox, folder)
) WITHOUT ROWID;

CREATE TABLE sync_inboxes (
    inbox        TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('ok', 'failed', 'auth_failed')),
    last_error   TEXT,
    last_sync    TEXT,                      -- ISO 8601 UTC of the last pass that ended ok
    failures     INTEGER NOT NULL DEFAULT 0, -- consecutive failed passes, for the backoff
    updated_at   TEXT NOT NULL
) WITHOUT ROWID;
