-- Acting on the timeline: pinned engagements, removed emails, and the engagements of a
-- deleted contact kept for its address (store/actions.py, store/detached.py).

-- When the engagement was pinned; NULL: not pinned. Pinned items come first on every
-- timeline they are on (store/queries.py TIMELINE_ORDER).
ALTER TABLE engagements ADD COLUMN pinned_at TEXT;

-- Emails a person removed from the timeline. The engagement is deleted; what stays is
-- the SHA-256 (hex) of its message key, so the same email coming again (a sync, a
-- UIDVALIDITY rescan, BCC, an import) is not logged again. Not the key itself: a
-- Message-ID often holds an address, and erase must leave no byte of one behind.
CREATE TABLE removed_emails (
    key_hash TEXT PRIMARY KEY,
    removed_at TEXT NOT NULL
) WITHOUT ROWID;

-- The engagements of a deleted contact, by the address they concern (an email's
-- From/To/Cc/Bcc address of that contact, else its primary address). When a contact
-- has that address again (created by logging or an import, or given the address), they
-- are associated with it again and the rows go. Erase deletes rows of its addresses.
CREATE TABLE detached_engagements (
    address TEXT NOT NULL,
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    detached_at TEXT NOT NULL,
    PRIMARY KEY (address, engagement_id)
) WITHOUT ROWID;
CREATE INDEX detached_engagements_engagement ON detached_engagements(engagement_id);
