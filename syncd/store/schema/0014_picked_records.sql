-- The records a sender picks for one email with a tag on the BCC logging address
-- (log+deal-42+ticket-7+nocreate@..., crm/bcctags.py), kept canonical ('deal-42+ticket-7'):
-- `spool.tag` carries it from the endpoint's 250 to the pipeline, so mail that waits in
-- the spool across a restart still gets its records; NULL: no tag.
ALTER TABLE spool ADD COLUMN tag TEXT;
-- The tag that picked an email's deals and tickets (NULL: they were picked
-- automatically). A later copy of the same message (IMAP's Sent folder) then adds no
-- automatic deals or tickets to it.
ALTER TABLE emails ADD COLUMN picked TEXT;
