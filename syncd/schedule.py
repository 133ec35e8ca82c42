"""The one scheduling hook the daemon gives its parts: run a job every so many seconds.

Parts (the BCC endpoint, IMAP, metrics) ask for periodic work through this callable
and never see the scheduler behind it (apscheduler, owned by ``daemon``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# every(job, seconds, name): run ``job`` (a function or a coroutine function) periodically
Every = Callable[[Callable[[], Any], float, str], None]
