-- Judging a new hit asks whether a person opened the message before, and a re-judge
-- whether a person opened or clicked it at all: the human (or inferred) opens and the
-- human clicks are each found through an index of their own in one step, however many
-- hits the message has had.
CREATE INDEX tracking_hits_human_open ON tracking_hits(message_id, at)
    WHERE verdict = 'human' AND (kind = 'open' OR inferred_open);
CREATE INDEX tracking_hits_human_click ON tracking_hits(message_id)
    WHERE verdict = 'human' AND kind = 'click';
