-- Search finds attachment file names (`attachment_names`, the names joined by spaces),
-- and tools that look for a table's full-text index find this one: datasette and
-- sqlite-utils match the text content="emails" (double quotes, no spaces) in the index's
-- CREATE statement, which the one in 0001 spelled otherwise. The index is built again
-- from `emails`, and its triggers with it.
DROP TRIGGER emails_fts_delete;
DROP TRIGGER emails_fts_update;
DROP TABLE emails_fts;

ALTER TABLE emails ADD COLUMN attachment_names TEXT NOT NULL DEFAULT '';
UPDATE emails SET attachment_names = (
    SELECT group_concat(filename, ' ') FROM (
        SELECT filename FROM attachments
        WHERE engagement_id = emails.engagement_id AND filename != '' ORDER BY id
    )
)
WHERE engagement_id IN (SELECT engagement_id FROM attachments WHERE filename != '');

CREATE VIRTUAL TABLE emails_fts USING fts5(
    subject, body, addresses, attachment_names,
    content="emails", content_rowid="engagement_id"
);
INSERT INTO emails_fts(emails_fts) VALUES ('rebuild');

CREATE TRIGGER emails_fts_delete AFTER DELETE ON emails BEGIN
    INSERT INTO emails_fts(emails_fts, rowid, subject, body, addresses, attachment_names)
    VALUES ('delete', old.engagement_id, old.subject, old.body, old.addresses,
            old.attachment_names);
END;

CREATE TRIGGER emails_fts_update
AFTER UPDATE OF subject, body, addresses, attachment_names ON emails BEGIN
    INSERT INTO emails_fts(emails_fts, rowid, subject, body, addresses, attachment_names)
    VALUES ('delete', old.engagement_id, old.subject, old.body, old.addresses,
            old.attachment_names);
    INSERT INTO emails_fts(rowid, subject, body, addresses, attachment_names)
    VALUES (new.engagement_id, new.subject, new.body, new.addresses, new.attachment_names);
END;

-- Each contact with its primary address and company name, as `contacts list` shows it:
-- a table to browse in datasette, where `contacts` alone has no email column.
CREATE VIEW contacts_view AS
SELECT c.id, a.address AS email, trim(c.first_name || ' ' || c.last_name) AS name,
       c.first_name, c.last_name, c.owner, c.lifecycle_stage, co.name AS company,
       c.legal_basis, c.marketing, c.last_contacted, c.last_activity, c.created_at,
       c.engagement_count, c.company_id
FROM contacts c
LEFT JOIN contact_addresses a ON a.contact_id = c.id AND a.is_primary = 1
LEFT JOIN companies co ON co.id = c.company_id;
