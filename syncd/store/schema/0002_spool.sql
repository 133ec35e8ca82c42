-- BCC endpoint: the inbound spool (mail acknowledged with 250, not yet in the CRM),
-- the outbound queue for extra_bcc copies, and durable counters for `syncd status`.
-- Times are Unix seconds (REAL, UTC).

CREATE TABLE spool (
    id          INTEGER PRIMARY KEY,
    received_at REAL    NOT NULL,
    mail_from   TEXT    NOT NULL,          -- envelope MAIL FROM
    peer        TEXT    NOT NULL,          -- connecting IP address
    owner       TEXT,                      -- member who owns new contacts, if known
    raw         BLOB    NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    spool_id        INTEGER,               -- the spool row the copy came from
    state           TEXT    NOT NULL CHECK (state IN ('held', 'queued', 'given_up')),
    created_at      REAL    NOT NULL,
    next_attempt_at REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    mail_from       TEXT    NOT NULL,
    recipients      TEXT    NOT NULL,      -- JSON list of addresses still to deliver to
    raw             BLOB    NOT NULL,
    last_error      TEXT,
    given_up_at     REAL
);

CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_spool ON outbox (spool_id) WHERE state = 'held';

CREATE TABLE bcc_counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
