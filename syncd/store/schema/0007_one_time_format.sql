-- One format for a moment in the whole store: ISO 8601 UTC text to the second with a 'Z'
-- ('2024-05-01T09:30:00Z'), as the CRM tables always had (store/timestamps.py).
-- The spool and outbox held Unix seconds (REAL): both tables are rebuilt with TEXT times,
-- their rows and ids kept. The sync state and the daemon's heartbeat held '+00:00' text
-- (initial_started with microseconds too): rewritten in place. SQLite's strftime reads
-- any of these forms and drops the fraction of a second, as store/timestamps.py does;
-- a value it cannot read is left as it was.

CREATE TABLE spool_0007 (
    id          INTEGER PRIMARY KEY,
    received_at TEXT    NOT NULL,
    mail_from   TEXT    NOT NULL,          -- envelope MAIL FROM
    peer        TEXT    NOT NULL,          -- connecting IP address
    owner       TEXT,                      -- member who owns new contacts, if known
    raw         BLOB    NOT NULL
);
INSERT INTO spool_0007 (id, received_at, mail_from, peer, owner, raw)
SELECT id, coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', received_at, 'unixepoch'), received_at),
       mail_from, peer, owner, raw
FROM spool;
DROP TABLE spool;
ALTER TABLE spool_0007 RENAME TO spool;

CREATE TABLE outbox_0007 (
    id              INTEGER PRIMARY KEY,
    spool_id        INTEGER,               -- the spool row the copy came from
    state           TEXT    NOT NULL CHECK (state IN ('held', 'queued', 'given_up')),
    created_at      TEXT    NOT NULL,
    next_attempt_at TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    mail_from       TEXT    NOT NULL,
    recipients      TEXT    NOT NULL,      -- JSON list of addresses still to deliver to
    raw             BLOB    NOT NULL,
    last_error      TEXT,
    given_up_at     TEXT
);
INSERT INTO outbox_0007 (id, spool_id, state, created_at, next_attempt_at, attempts,
                         mail_from, recipients, raw, last_error, given_up_at)
SELECT id, spool_id, state,
       coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', created_at, 'unixepoch'), created_at),
       coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', next_attempt_at, 'unixepoch'), next_attempt_at),
       attempts, mail_from, recipients, raw, last_error,
       coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', given_up_at, 'unixepoch'), given_up_at)
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_0007 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_spool ON outbox (spool_id) WHERE state = 'held';

UPDATE sync_folders SET
    initial_started = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', initial_started), initial_started),
    last_sync = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', last_sync), last_sync);

UPDATE sync_inboxes SET
    last_sync = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', last_sync), last_sync),
    updated_at = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', updated_at), updated_at);

UPDATE daemon_state SET
    started_at = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', started_at), started_at),
    updated_at = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', updated_at), updated_at);
