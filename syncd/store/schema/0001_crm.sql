-- The CRM: team, inboxes, contacts, companies, deals, tickets, engagements, emails,
-- where each email was seen, associations, attachments, quarantine, raw messages and
-- the full-text index. Times are ISO 8601 UTC text ('2024-05-01T09:30:00Z') so that
-- text order is time order. docs/schema.md explains every table.

CREATE TABLE team_members (
    email TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT ''
);

CREATE TABLE team_aliases (
    alias TEXT PRIMARY KEY,
    member_email TEXT NOT NULL REFERENCES team_members(email) ON DELETE CASCADE
);

CREATE TABLE inboxes (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('personal', 'team')),
    address TEXT NOT NULL,
    owner TEXT
);

CREATE TABLE companies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT,
    lifecycle_stage TEXT,
    created_at TEXT NOT NULL,
    last_activity TEXT,
    engagement_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE company_domains (
    domain TEXT PRIMARY KEY,
    company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE
);
CREATE INDEX company_domains_company ON company_domains(company_id);

CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    owner TEXT,
    lifecycle_stage TEXT,
    legal_basis TEXT,
    marketing INTEGER NOT NULL DEFAULT 0,
    company_id INTEGER REFERENCES companies(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    last_contacted TEXT,
    last_activity TEXT,
    engagement_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX contacts_company ON contacts(company_id);

CREATE TABLE contact_addresses (
    address TEXT PRIMARY KEY,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    is_primary INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX contact_addresses_contact ON contact_addresses(contact_id);

CREATE TABLE deals (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    pipeline TEXT NOT NULL DEFAULT 'default',
    stage TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'won', 'lost')),
    amount REAL,
    close_date TEXT,
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    engagement_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE deal_contacts (
    deal_id INTEGER NOT NULL REFERENCES deals(id) ON DELETE CASCADE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (deal_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX deal_contacts_contact ON deal_contacts(contact_id, deal_id);

CREATE TABLE deal_companies (
    deal_id INTEGER NOT NULL REFERENCES deals(id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    PRIMARY KEY (deal_id, company_id)
) WITHOUT ROWID;
CREATE INDEX deal_companies_company ON deal_companies(company_id);

CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    pipeline TEXT NOT NULL DEFAULT 'default',
    status TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    engagement_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE ticket_contacts (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (ticket_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX ticket_contacts_contact ON ticket_contacts(contact_id, ticket_id);

CREATE TABLE ticket_companies (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    PRIMARY KEY (ticket_id, company_id)
) WITHOUT ROWID;
CREATE INDEX ticket_companies_company ON ticket_companies(company_id);

-- Every timeline item. Emails have a row in `emails` too; notes keep their text in body.
CREATE TABLE engagements (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('email', 'note', 'task', 'call', 'meeting')),
    occurred_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    owner TEXT,
    body TEXT,
    status TEXT CHECK (status IN ('sent', 'opened', 'clicked'))
);
CREATE INDEX engagements_occurred ON engagements(occurred_at);

CREATE TABLE emails (
    engagement_id INTEGER PRIMARY KEY REFERENCES engagements(id) ON DELETE CASCADE,
    message_key TEXT NOT NULL UNIQUE,
    message_id TEXT,
    thread_key TEXT,
    direction TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    from_addr TEXT,
    from_name TEXT,
    to_json TEXT NOT NULL DEFAULT '[]',
    cc_json TEXT NOT NULL DEFAULT '[]',
    bcc_json TEXT NOT NULL DEFAULT '[]',
    subject TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '',
    date TEXT NOT NULL,
    date_missing INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    defects TEXT NOT NULL DEFAULT ''
);
CREATE INDEX emails_thread ON emails(thread_key);

-- The full-text index reads its text from `emails` (external content), so erasing or
-- redacting an email's row and running 'rebuild' leaves nothing of the old text behind.
-- New rows are indexed by the write path (store/mailwriter.py MailWriter.flush), a batch at a
-- time in the batch's own transaction: there is no insert trigger, because FTS5 writes
-- out its pending index at every SAVEPOINT, and the pipeline holds one per message.
CREATE VIRTUAL TABLE emails_fts USING fts5(
    subject, body, addresses,
    content = 'emails', content_rowid = 'engagement_id'
);

CREATE TRIGGER emails_fts_delete AFTER DELETE ON emails BEGIN
    INSERT INTO emails_fts(emails_fts, rowid, subject, body, addresses)
    VALUES ('delete', old.engagement_id, old.subject, old.body, old.addresses);
END;

CREATE TRIGGER emails_fts_update AFTER UPDATE OF subject, body, addresses ON emails BEGIN
    INSERT INTO emails_fts(emails_fts, rowid, subject, body, addresses)
    VALUES ('delete', old.engagement_id, old.subject, old.body, old.addresses);
    INSERT INTO emails_fts(rowid, subject, body, addresses)
    VALUES (new.engagement_id, new.subject, new.body, new.addresses);
END;

-- Where each email was seen; uid is 0 for sources without one (bcc, import).
CREATE TABLE sightings (
    id INTEGER PRIMARY KEY,
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    inbox TEXT,
    folder TEXT,
    uid INTEGER NOT NULL DEFAULT 0,
    seen_at TEXT NOT NULL,
    UNIQUE (engagement_id, label, uid)
);

-- The message bytes as received, minus the base64 text of stored attachments (see
-- store/raw.py): `holes` (JSON) says where each was cut out; size and crc32 are the
-- original's, checked when the bytes are put back together.
CREATE TABLE raw_messages (
    engagement_id INTEGER PRIMARY KEY REFERENCES engagements(id) ON DELETE CASCADE,
    raw BLOB NOT NULL,
    holes TEXT,
    size INTEGER NOT NULL,
    crc32 INTEGER NOT NULL
);

CREATE TABLE engagement_contacts (
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (engagement_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX engagement_contacts_contact ON engagement_contacts(contact_id, engagement_id);

CREATE TABLE engagement_companies (
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    PRIMARY KEY (engagement_id, company_id)
) WITHOUT ROWID;
CREATE INDEX engagement_companies_company ON engagement_companies(company_id, engagement_id);

CREATE TABLE engagement_deals (
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    deal_id INTEGER NOT NULL REFERENCES deals(id) ON DELETE CASCADE,
    PRIMARY KEY (engagement_id, deal_id)
) WITHOUT ROWID;
CREATE INDEX engagement_deals_deal ON engagement_deals(deal_id, engagement_id);

CREATE TABLE engagement_tickets (
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    PRIMARY KEY (engagement_id, ticket_id)
) WITHOUT ROWID;
CREATE INDEX engagement_tickets_ticket ON engagement_tickets(ticket_id, engagement_id);

-- engagement_count on each record follows its associations, so the
-- max_engagements_per_record check is one row read. The write path (store/mailwriter.py) adds
-- to it as it links, a batch at a time; these triggers take away however links are
-- removed (an erase cascades). An insert trigger would cost a row UPDATE per link,
-- which with foreign keys on is most of the price of a link.
CREATE TRIGGER engagement_contacts_count_del AFTER DELETE ON engagement_contacts BEGIN
    UPDATE contacts SET engagement_count = engagement_count - 1 WHERE id = old.contact_id;
END;
CREATE TRIGGER engagement_companies_count_del AFTER DELETE ON engagement_companies BEGIN
    UPDATE companies SET engagement_count = engagement_count - 1 WHERE id = old.company_id;
END;
CREATE TRIGGER engagement_deals_count_del AFTER DELETE ON engagement_deals BEGIN
    UPDATE deals SET engagement_count = engagement_count - 1 WHERE id = old.deal_id;
END;
CREATE TRIGGER engagement_tickets_count_del AFTER DELETE ON engagement_tickets BEGIN
    UPDATE tickets SET engagement_count = engagement_count - 1 WHERE id = old.ticket_id;
END;

-- One row per attachment part of an email. The content lives once, under
-- attachments_dir/ab/cd/<sha256>; `stored` is 0 when it was over max_attachment_mb
-- (or removed by an erase), and `note` says why. The filename is metadata only.
CREATE TABLE attachments (
    id INTEGER PRIMARY KEY,
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    filename TEXT NOT NULL DEFAULT '',
    content_type TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX attachments_engagement ON attachments(engagement_id);
CREATE INDEX attachments_sha256 ON attachments(sha256);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    label TEXT NOT NULL,
    provenance TEXT NOT NULL,
    received_at TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    raw BLOB NOT NULL
);
