-- Raw copies are compressed from now on: `codec` says how each one's bytes are kept
-- ('' as they are, as in stores made before this version; 'zstd' compressed).
ALTER TABLE raw_messages ADD COLUMN codec TEXT NOT NULL DEFAULT '';
