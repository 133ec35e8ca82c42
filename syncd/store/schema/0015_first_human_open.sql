-- Judging a new hit asks whether a person opened the message before: the first human
-- (or inferred) open, found through this index in one step however many hits the
-- message has had.
CREATE INDEX tracking_hits_human_open ON tracking_hits(message_id, at)
    WHERE verdict = 'human' AND (kind = 'open' OR inferred_open);
