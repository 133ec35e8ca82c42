"""IMAP: connection, wire limits, fetch, the pure sync plan, one inbox's pass."""
