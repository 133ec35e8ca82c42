-- Which configured `folders` name led to a server folder, and how it was found (name,
-- namespace or role: sources/imap/folders.py), for `syncd status`. NULL for `folders: all`.
ALTER TABLE sync_folders ADD COLUMN configured TEXT;
ALTER TABLE sync_folders ADD COLUMN resolved_by TEXT;
