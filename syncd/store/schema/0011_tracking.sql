-- Open and click tracking of mail a member submits through syncd.
--
-- A tracked message's id is the id its tokens carry. It is derived from the message key
-- (an HMAC under the tracking secret, 63 bits), so a client that resends after a crash
-- gets the same tokens and the same row. The message is relayed before it is logged, so
-- `engagement_id` is filled in by the transaction that logs it.
CREATE TABLE tracked_messages (
    id INTEGER PRIMARY KEY,
    message_key TEXT NOT NULL UNIQUE,
    engagement_id INTEGER REFERENCES engagements(id) ON DELETE CASCADE,
    sender TEXT NOT NULL,                 -- the member's primary email
    contact_id INTEGER REFERENCES contacts(id) ON DELETE SET NULL,
    anonymous INTEGER NOT NULL DEFAULT 0, -- several recipients: hits are "someone"'s
    relayed_at TEXT NOT NULL              -- the smarthost's 250 (ISO 8601 UTC, Z)
);
CREATE INDEX tracked_messages_engagement ON tracked_messages(engagement_id);

-- The destinations of a message's rewritten links, by index: a click is redirected only
-- to what is stored here, never to anything the URL says.
CREATE TABLE tracked_links (
    message_id INTEGER NOT NULL REFERENCES tracked_messages(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    url TEXT NOT NULL,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;

-- Every open and click, with its verdict; none is thrown away, so the rules can be run
-- again. `ip` is truncated (/24, /48) unless tracking.keep_full_ips.
CREATE TABLE tracking_hits (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES tracked_messages(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('open', 'click')),
    link_idx INTEGER,
    at TEXT NOT NULL,
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    verdict TEXT NOT NULL
        CHECK (verdict IN ('human', 'blocked', 'self', 'machine', 'prefetch', 'scanner')),
    inferred_open INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX tracking_hits_message ON tracking_hits(message_id, at);

-- The addresses a member submitted from lately: a hit from one is the sender reading
-- their own copy (verdict `self`). Kept as tracking_hits keep IPs.
CREATE TABLE submitter_ips (
    member TEXT NOT NULL,
    ip TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (member, ip)
) WITHOUT ROWID;
