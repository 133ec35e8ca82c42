"""Numbered SQL migrations, applied in order by ``store.db``."""
