"""One logged email in full, as ``syncd email show`` and ``attachment save`` read it, and
which engagement an ID names, for every command that takes one.

An engagement is named by its id (the short, stable id every timeline item carries) or,
for an email, by its message key (its Message-ID as the parser normalises it, or the
``sha256:`` digest of mail without one); ``find`` says which engagement that is. What the
user typed is read into one of those by the CLI (``cli/common.py:engagement_ref``).
``email_view`` is the timeline item (``items.engagement_item``: sources, associations,
tracking, attachments with their ids) plus what only a reader of the whole email wants:
display names, the text body, the defects the parser noted and how many emails its
thread holds. The raw bytes come from ``raw.raw_message``; an attachment's content from
its file under ``attachments_dir`` (``attachment_file``). Read-only.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, NamedTuple

from syncd.store import items
from syncd.store.blobs import HEX64, blob_path


class Found(NamedTuple):
    """The engagement an ID names, and its type (``email``, ``note``...)."""

    engagement_id: int
    type: str


def find(conn: sqlite3.Connection, ref: int | str) -> Found | None:
    """The engagement ``ref`` names: an int is an engagement id (within SQLite's integers:
    the caller checks), a str an email's message key. None when nothing matches."""
    if isinstance(ref, int):
        row = conn.execute("SELECT id, type FROM engagements WHERE id = ?", (ref,)).fetchone()
        return Found(row[0], row[1]) if row is not None else None
    # An email with a Message-ID is keyed by it (the UNIQUE message_key), one without by
    # its digest.
    row = conn.execute("SELECT engagement_id FROM emails WHERE message_key = ?", (ref,)).fetchone()
    return Found(row[0], "email") if row is not None else None


def _people(text: str) -> list[dict[str, str]]:
    return [{"name": name or "", "email": email} for name, email in json.loads(text or "[]")]


def email_view(conn: sqlite3.Connection, engagement_id: int) -> dict[str, Any] | None:
    """The email in full (the timeline item's fields and more); None if it is no email."""
    row = conn.execute(
        items.ENGAGEMENT_SQL + " WHERE g.id = ? AND g.type = 'email'", (engagement_id,)
    ).fetchone()
    if row is None:
        return None
    item = items.engagement_item(conn, row)
    extra = conn.execute(
        "SELECT e.from_name, e.to_json, e.cc_json, e.size, e.thread_key, "
        "(SELECT count(*) FROM emails t WHERE t.thread_key = e.thread_key) AS in_thread, "
        "(SELECT size FROM raw_messages r WHERE r.engagement_id = e.engagement_id) AS raw_size "
        "FROM emails e WHERE e.engagement_id = ?",
        (engagement_id,),
    ).fetchone()
    item.update(
        from_name=extra["from_name"] or "",
        recipients={"to": _people(extra["to_json"]), "cc": _people(extra["cc_json"])},
        date_missing=bool(row["date_missing"]),
        size=extra["size"],
        body=row["body"] or "",
        defects=defects(conn, engagement_id),
        thread={"count": extra["in_thread"] if extra["thread_key"] else 1},
        raw_kept=extra["raw_size"] is not None,
    )
    return item


def defects(conn: sqlite3.Connection, engagement_id: int) -> list[str]:
    """What the parser noted about the email (``emails.defects``, one note each)."""
    row = conn.execute(
        "SELECT defects FROM emails WHERE engagement_id = ?", (engagement_id,)
    ).fetchone()
    return [d for d in (row[0] if row else "").split("; ") if d]


def attachment(conn: sqlite3.Connection, attachment_id: int) -> dict[str, Any] | None:
    """An attachment's row: ``id``, ``engagement_id``, ``sha256``, ``filename`` (from the
    mail: hostile), ``content_type``, ``size``, ``stored``, ``note``; None if unknown."""
    row = conn.execute(
        "SELECT id, engagement_id, sha256, filename, content_type, size, stored, note "
        "FROM attachments WHERE id = ?",
        (attachment_id,),
    ).fetchone()
    if row is None:
        return None
    return {**dict(row), "stored": bool(row["stored"])}


def attachment_file(attachments_dir: Path, sha256: str) -> Path | None:
    """Where a stored attachment's content lives; None for a digest that is not one (an
    attachment never stored has none)."""
    return blob_path(attachments_dir, sha256) if HEX64.match(sha256 or "") else None
