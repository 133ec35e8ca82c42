"""Whether the store's file is sound: SQLite's own checks, bounded in time, as a verdict.

``check`` runs ``PRAGMA quick_check`` (page structure, what ``syncd run`` asks at start)
or ``integrity_check`` (also every index against its table, for ``syncd check-store``)
on a read-only connection of its own, so it runs beside a working daemon. ``is_damage``
tells a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB) from a store that is only busy,
full or read-only, which the next attempt may find mended.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
# SQLite virtual machine steps between two looks at the clock.
_STEPS = 10_000


@dataclass(frozen=True)
class Verdict:
    """What a check found: ``problems`` empty is a sound store, as far as it got;
    ``finished`` False means the time ran out first."""

    problems: list[str] = field(default_factory=list)
    finished: bool = True

    @property
    def ok(self) -> bool:
        return self.finished and not self.problems


def is_damage(exc: BaseException | None) -> bool:
    """``exc``, or an error it was raised from, says the file itself is damaged."""
    return damage_reason(exc) is not None


def damage_reason(exc: BaseException | None) -> str | None:
    """SQLite's words for the damage ``exc`` (or an error it came from) reports, if any."""
    while exc is not None:
        name = getattr(exc, "sqlite_errorname", None) or ""  # absent when not from SQLite
        if isinstance(exc, sqlite3.Error) and name.startswith(DAMAGE):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def check(
    path: str | Path, *, full: bool = False, seconds: float | None = None, limit: int = 100
) -> Verdict:
    """Check the store at ``path`` (which must exist); at most ``limit`` problems, and no
    longer than ``seconds`` when given. Raises ``sqlite3.Error`` only when the file
    cannot be read at all for another reason than damage (permissions, locks)."""
    pragma = "integrity_check" if full else "quick_check"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        if seconds is not None:
            deadline = time.monotonic() + seconds
            conn.set_progress_handler(lambda: time.monotonic() > deadline, _STEPS)
        return _run(conn, pragma, limit)
    finally:
        conn.close()


def _run(conn: sqlite3.Connection, pragma: str, limit: int) -> Verdict:
    rows: list[str] = []
    try:
        for (row,) in conn.execute(f"PRAGMA {pragma}({int(limit)})"):
            rows.append(row)
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", None) == "SQLITE_INTERRUPT":
            return Verdict(_lines(rows), finished=False)
        if not is_damage(exc):
            raise
        if not rows:
            # Python reads a row ahead, so the error above took the page structure's row
            # with it (the check then scans the tables and meets the damage). That row
            # alone comes back through the table-valued form, which stops after it.
            with contextlib.suppress(sqlite3.DatabaseError):
                sql = f"SELECT * FROM pragma_{pragma}({int(limit)}) LIMIT 1"
                rows = [row for (row,) in conn.execute(sql)]
        rows.append(str(exc))
    problems = _lines(rows)
    return Verdict([] if problems == ["ok"] else problems)


def _lines(rows: list[str]) -> list[str]:
    """One problem a line: SQLite puts several in one row, under a per-database title."""
    found: list[str] = []
    for row in rows:
        for line in str(row).splitlines():
            if line.strip() and not line.startswith("*** in database"):
                found.append(line.strip())
    return list(dict.fromkeys(found))  # each once, in order
