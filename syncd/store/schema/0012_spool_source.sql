-- Which way a spooled message came: 'bcc' (the logging endpoint) or 'relay' (mail a
-- member submitted, which the smarthost accepted). The drain hands it to the pipeline
-- with that source, and ties a relayed message's tracking to its engagement.
ALTER TABLE spool ADD COLUMN source TEXT NOT NULL DEFAULT 'bcc'
    CHECK (source IN ('bcc', 'relay'));
