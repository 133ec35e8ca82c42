"""Where mail comes from (IMAP, the BCC endpoint, files), handed over through ``base``."""
