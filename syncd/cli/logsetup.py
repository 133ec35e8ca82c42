"""Logging to stderr, one line per event, with syslog priority prefixes under journald.

journald reads a ``<N>`` prefix as the line's priority, so ``journalctl -p warning``
works; on a terminal the prefix would be noise, so it is added only when journald
is attached (the CLI passes that in; this module reads no environment). Message
bodies and secrets are never logged by syncd; this module only shapes lines.
"""

from __future__ import annotations

import logging
import sys

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournaldFormatter(logging.Formatter):
    """``<N>logger: message``; journald adds its own time stamp."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = super().format(record).replace("\n", " | ")
        return f"<{priority}>{text}"


def configure(verbosity: int = 0, *, journald: bool = False) -> None:
    """Set up the root handler once: verbosity 0 is INFO, >0 DEBUG, <0 WARNING."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if journald:
        handler.setFormatter(JournaldFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # imaplib's and aiosmtpd's own chatter can include protocol lines; keep them quiet.
    for noisy in ("imapclient", "mail.log", "asyncio", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
