-- A UID that stopped the last pass(es) of a folder, and how many in a row: after a few
-- the next pass quarantines a note naming it and moves on (sources/syncplan.py).
ALTER TABLE sync_folders ADD COLUMN stuck_uid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_folders ADD COLUMN stuck_passes INTEGER NOT NULL DEFAULT 0;
