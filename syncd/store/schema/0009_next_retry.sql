-- When the daemon will try a failed inbox again (ISO 8601 UTC with a Z, NULL when no
-- retry is pending): `syncd status`, /health and /metrics show it. A pass that ends ok
-- clears it.
ALTER TABLE sync_inboxes ADD COLUMN next_retry TEXT;
-- From this version on, sync_folders.last_sync also moves when a pass that ended ok got
-- through the folder with nothing new: the last successful sync, quiet folders included.
