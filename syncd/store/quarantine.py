"""The quarantine: mail that could not be logged, kept whole with its reason and its
provenance, until a retry logs it.

Every function runs inside the caller's transaction (``db.transaction``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from syncd.mail.provenance import Provenance
from syncd.store.timestamps import iso, now_iso


def quarantine(conn: sqlite3.Connection, raw: bytes, provenance: Provenance, reason: str) -> int:
    """Keep a message that could not be logged, with why and where it came from."""
    cur = conn.execute(
        "INSERT INTO quarantine(reason, label, provenance, received_at, quarantined_at, raw) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            reason,
            provenance.label,
            provenance_json(provenance),
            iso(provenance.received_at),
            now_iso(),
            raw,
        ),
    )
    return int(cur.lastrowid or 0)


def provenance_json(provenance: Provenance) -> str:
    return json.dumps(
        {
            "source": provenance.source,
            "received_at": provenance.received_at.isoformat(),
            "inbox": provenance.inbox,
            "folder": provenance.folder,
            "uid": provenance.uid,
            "owner": provenance.owner,
            "sender": provenance.sender,
            "internal_date": provenance.internal_date.isoformat()
            if provenance.internal_date
            else None,
        }
        | ({"partial": True} if provenance.partial else {})
        | ({"tag": provenance.tag} if provenance.tag else {})
        | ({"gm_thrid": provenance.gm_thrid} if provenance.gm_thrid else {})
    )


def provenance_from_json(text: str) -> Provenance:
    data = json.loads(text)
    internal = data.get("internal_date")
    return Provenance(
        source=data["source"],
        received_at=datetime.fromisoformat(data["received_at"]),
        inbox=data.get("inbox"),
        folder=data.get("folder"),
        uid=data.get("uid"),
        owner=data.get("owner"),
        sender=data.get("sender"),
        internal_date=datetime.fromisoformat(internal) if internal else None,
        partial=bool(data.get("partial")),
        tag=data.get("tag") or None,
        gm_thrid=data.get("gm_thrid"),
    )


def quarantined(conn: sqlite3.Connection, ids: Sequence[int] | None = None) -> list[sqlite3.Row]:
    """Quarantine rows (id, raw, provenance, attempts), all or the given ids."""
    sql = "SELECT id, raw, provenance, attempts FROM quarantine"
    if ids:
        sql += f" WHERE id IN ({','.join('?' * len(ids))})"
    return list(conn.execute(sql + " ORDER BY id", tuple(ids or ())))


def count(conn: sqlite3.Connection) -> int:
    """How many messages wait in the quarantine."""
    return int(conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])


def requarantine(conn: sqlite3.Connection, quarantine_id: int, reason: str) -> None:
    conn.execute(
        "UPDATE quarantine SET reason = ?, attempts = attempts + 1, quarantined_at = ? "
        "WHERE id = ?",
        (reason, now_iso(), quarantine_id),
    )


def release(conn: sqlite3.Connection, quarantine_id: int) -> None:
    conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))
