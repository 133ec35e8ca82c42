"""Backup archives of the whole store: the SQLite file, the attachment files it lists, and
a manifest with counts and a sha256 of every member; writing, checking and restoring them.

An archive is a tar (gzip, xz or bzip2 when its name ends so) holding ``syncd.sqlite3``,
``attachments/ab/cd/<sha256>`` and, last, ``manifest.json``. The SQLite copy is taken
with the backup API in one step, so it is a snapshot of one moment even while the daemon
commits; the attachment files copied are exactly those that snapshot lists as stored.
Attachment files are written before the rows that list them and never change, so each
listed file is there; one an erase removes after the snapshot makes the backup start
over. Files written after the snapshot are left out with the rows that will list them.

Every archive is read back before it is renamed into place: each member's sha256 against
the manifest, ``PRAGMA integrity_check`` on the store copy, the manifest's counts against
the copy, and every attachment the copy lists present. Restoring reads and checks the
whole archive into staging directories beside the destination before anything there is
replaced. Members are never extracted by name: only the three kinds above are accepted.
Everything written is 0600 and every directory 0700, whatever the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from syncd import __version__
from syncd.errors import StoreDamaged, SyncdError
from syncd.store.blobs import blob_path
from syncd.store.db import latest_version
from syncd.store.integrity import is_damage
from syncd.store.privatefiles import private_dir, private_file, sync_dir

FORMAT = 1
STORE_MEMBER = "syncd.sqlite3"
MANIFEST = "manifest.json"
ATTACHMENT_MEMBER = re.compile(r"^attachments/([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{60})$")
# What the manifest counts, each as (name, query on the store copy).
COUNTS = (
    ("contacts", "SELECT count(*) FROM contacts"),
    ("companies", "SELECT count(*) FROM companies"),
    ("deals", "SELECT count(*) FROM deals"),
    ("tickets", "SELECT count(*) FROM tickets"),
    ("engagements", "SELECT count(*) FROM engagements"),
    ("emails", "SELECT count(*) FROM emails"),
    ("attachments", "SELECT count(*) FROM attachments"),
    ("attachment_files", "SELECT count(DISTINCT sha256) FROM attachments WHERE stored = 1"),
    ("quarantined", "SELECT count(*) FROM quarantine"),
    ("spooled", "SELECT count(*) FROM spool"),
)
COMPRESSION = {".gz": "gz", ".tgz": "gz", ".xz": "xz", ".txz": "xz", ".bz2": "bz2"}
# Snapshots taken again when an erase removes a listed file between snapshot and copy.
SNAPSHOT_TRIES = 3
_CHUNK = 1 << 20


class BackupError(SyncdError):
    """A backup or restore that cannot be done as asked (the message says why)."""


class DamagedArchive(BackupError):
    """An archive that does not hold what its manifest says; ``problems`` lists each."""

    def __init__(self, archive: Path, problems: list[str], *, store_copy: bool = False) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{archive} is damaged: {problems[0]}{more}")
        self.archive = archive
        self.problems = problems
        self.store_copy = store_copy  # the members are whole; the store copy is not


@dataclass
class Report:
    """What an archive holds, once checked."""

    archive: Path
    size: int
    created_at: str
    schema: int
    counts: dict[str, int]
    members: int
    problems: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive),
            "verified": not self.problems,
            "bytes": self.size,
            "created_at": self.created_at,
            "schema": self.schema,
            "members": self.members,
            "counts": self.counts,
        }

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c.get('emails', 0)} emails, {c.get('contacts', 0)} contacts, "
            f"{c.get('attachment_files', 0)} attachment files, {self.size} bytes"
        )


# --- writing ----------------------------------------------------------------------------


def write_archive(store: Path, attachments_dir: Path, dest: Path, *, force: bool) -> Report:
    """Write a checked archive of the store to ``dest``; refuse to replace one unless
    ``force``. Nothing is at ``dest`` until the archive has been read back and found whole."""
    dest = Path(dest)
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory; give a file name")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; give --force to replace it")
    if not dest.parent.is_dir():
        raise BackupError(f"no directory {dest.parent} to write {dest.name} in")
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        archive = work / "archive"
        try:
            for attempt in range(SNAPSHOT_TRIES):
                try:
                    _write(store, attachments_dir, archive, work, _mode(dest))
                    break
                except FileNotFoundError as exc:
                    if attempt == SNAPSHOT_TRIES - 1:
                        raise BackupError(
                            f"the attachment file {exc.filename} the store lists is missing"
                        ) from None
                    # An erase unlinks files before it commits: let it finish.
                    time.sleep(1.0)
            report = _read(archive, lambda name: work / "check" if name == STORE_MEMBER else None)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            raise StoreDamaged.found(str(store), [str(exc)]) from None
        except DamagedArchive as exc:
            if not exc.store_copy:
                raise
            # Every member read back as written: the copy holds the pages the snapshot
            # read, so the damage is the store's, and the backup it would be is no use.
            raise StoreDamaged.found(str(store), exc.problems) from None
        report.archive = dest
        if dest.exists() and not force:
            raise BackupError(f"{dest} exists; give --force to replace it")
        os.replace(archive, dest)
        sync_dir(dest.parent)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mode(dest: Path) -> str:
    return "w:" + COMPRESSION.get(dest.suffix.lower(), "")


def _write(store: Path, attachments_dir: Path, archive: Path, work: Path, mode: str) -> None:
    copy = work / STORE_MEMBER
    copy.unlink(missing_ok=True)
    _snapshot(store, copy)
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        digests = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT sha256 FROM attachments WHERE stored = 1 ORDER BY sha256"
            )
        ]
        counts = _counts(conn)
        schema = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    now = time.time()
    checksums: dict[str, str] = {}
    with private_file(archive) as handle, tarfile.open(fileobj=handle, mode=mode) as tar:
        checksums[STORE_MEMBER] = _add_file(tar, STORE_MEMBER, copy, now)
        for digest in digests:
            path = blob_path(attachments_dir, digest)
            name = path.relative_to(attachments_dir).as_posix()
            member = f"attachments/{name}"
            checksums[member] = _add_file(tar, member, path, now)
            if checksums[member] != digest:
                raise BackupError(f"the attachment file {path} does not hold its bytes any more")
        manifest = {
            "format": FORMAT,
            "syncd": __version__,
            "created_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "schema": schema,
            "counts": counts,
            "sha256": checksums,
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        tar.addfile(_info(MANIFEST, len(data), now), io.BytesIO(data))


def _snapshot(store: Path, copy: Path) -> None:
    """The store as of one moment, as a standalone rollback-journal file at ``copy``."""
    source = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        os.close(os.open(copy, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        target = sqlite3.connect(copy)
        try:
            source.execute("PRAGMA busy_timeout = 10000")
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: conn.execute(sql).fetchone()[0] for name, sql in COUNTS}


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o600
    return info


def _add_file(tar: tarfile.TarFile, name: str, path: Path, mtime: float) -> str:
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        tar.addfile(_info(name, os.fstat(handle.fileno()).st_size, mtime), reader)
    return reader.hash.hexdigest()


class _Reader:
    """A file that hashes what tarfile reads from it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.hash.update(data)
        return data


# --- reading and checking ---------------------------------------------------------------


def check_archive(archive: Path) -> Report:
    """Read the whole archive and check it; raise DamagedArchive with what is wrong."""
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"no archive at {archive}")
    scratch = Path(tempfile.mkdtemp(prefix="syncd-check."))
    try:
        return _read(archive, lambda name: scratch / name if name == STORE_MEMBER else None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read(archive: Path, place: Callable[[str], Path | None]) -> Report:
    """Stream every member, hashing it and writing it where ``place`` says (None: hash
    only); then check the manifest against what was read. The store member must be
    placed: it is opened for the integrity check."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    manifest: dict[str, Any] = {}
    store_copy: Path | None = None
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for info in tar:
                name = info.name
                if not info.isfile() or not (
                    name in (STORE_MEMBER, MANIFEST) or ATTACHMENT_MEMBER.match(name)
                ):
                    raise DamagedArchive(archive, [f"{name!r} is not part of a syncd backup"])
                if name in seen or (name == MANIFEST and manifest):
                    raise DamagedArchive(archive, [f"{name} is there twice"])
                source = tar.extractfile(info)
                assert source is not None  # a regular file, checked above
                if name == MANIFEST:
                    manifest = _manifest(archive, source.read())
                    continue
                target = place(name)
                seen[name] = _copy(source, target)
                if name == STORE_MEMBER:
                    store_copy = target
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DamagedArchive(archive, [f"cannot read it ({exc})"]) from None
    if not manifest:
        raise DamagedArchive(archive, [f"no {MANIFEST} in it"])
    expected: dict[str, str] = manifest["sha256"]
    problems += [f"{name} is missing" for name in sorted(set(expected) - set(seen))]
    problems += [f"{name} is not in the manifest" for name in sorted(set(seen) - set(expected))]
    problems += [
        f"{name} does not match its checksum"
        for name in sorted(set(seen) & set(expected))
        if seen[name] != expected[name]
    ]
    problems += [
        f"{name} does not hold the attachment its name says"
        for name in sorted(seen)
        if (m := ATTACHMENT_MEMBER.match(name)) and seen[name] != m.group(3)
    ]
    counts: dict[str, int] = {}
    if store_copy is not None and not problems:
        counts, store_problems = _check_store(store_copy, set(seen))
        if store_problems and not counts:  # the copy itself, not a member it lacks
            raise DamagedArchive(archive, store_problems, store_copy=True)
        problems += store_problems
        problems += [
            f"the manifest counts {want} {name}, the store copy holds {counts.get(name)}"
            for name, want in manifest["counts"].items()
            if counts.get(name) != want
        ]
    elif store_copy is None:
        problems.append(f"{STORE_MEMBER} is missing")
    if problems:
        raise DamagedArchive(archive, problems)
    return Report(
        archive,
        archive.stat().st_size,
        str(manifest["created_at"]),
        int(manifest["schema"]),
        counts,
        len(seen) + 1,
    )


def _manifest(archive: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        ok = (
            manifest.get("format") == FORMAT
            and isinstance(manifest.get("sha256"), dict)
            and isinstance(manifest.get("counts"), dict)
            and "created_at" in manifest
            and isinstance(manifest.get("schema"), int)
        )
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise DamagedArchive(archive, [f"{MANIFEST} is not one this syncd can read"])
    return manifest  # type: ignore[no-any-return]


def _copy(source: IO[bytes], target: Path | None) -> str:
    """sha256 of what ``source`` holds, written to ``target`` on the way. A failed read is
    the archive's problem (it propagates); a failed write is this disk's, and says so."""
    digest = hashlib.sha256()
    try:
        out = private_file(target) if target is not None else contextlib.nullcontext()
        with out as handle:
            while block := source.read(_CHUNK):
                digest.update(block)
                if handle is not None:
                    _write_block(handle, block, target)
    except OSError as exc:
        if exc.filename is not None:  # opening or making the target's directory
            raise BackupError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
        raise
    return digest.hexdigest()


def _write_block(handle: IO[bytes], block: bytes, target: Path | None) -> None:
    try:
        handle.write(block)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None


def _check_store(copy: Path, members: set[str]) -> tuple[dict[str, int], list[str]]:
    """Counts of the store copy, and what is wrong with it."""
    try:
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if verdict != ["ok"]:
                return {}, [f"the store copy fails the integrity check: {verdict[0]}"]
            counts = _counts(conn)
            listed = [
                row[0]
                for row in conn.execute("SELECT DISTINCT sha256 FROM attachments WHERE stored = 1")
            ]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {}, [f"the store copy cannot be read: {exc}"]
    missing = [d for d in listed if f"attachments/{d[:2]}/{d[2:4]}/{d}" not in members]
    if missing:
        return counts, [f"{len(missing)} attachment file(s) the store lists are not in it"]
    return counts, []


# --- restoring --------------------------------------------------------------------------


def restore_archive(archive: Path, store: Path, attachments_dir: Path, *, force: bool) -> Report:
    """Check the archive into staging directories, then put the store and the attachments
    in place of what is at ``store`` and ``attachments_dir`` (only with ``force`` when
    either holds anything). The caller holds the daemon's lock on the store."""
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"no archive at {archive}")
    if not force:
        for path in (store, attachments_dir):
            if path.exists() and (path.is_file() or any(path.iterdir())):
                raise BackupError(f"{path} exists; give --force to replace it")
    private_dir(store.parent)
    private_dir(attachments_dir.parent)
    stage_store = Path(tempfile.mkdtemp(prefix=".restore.", dir=store.parent))
    stage_files = Path(tempfile.mkdtemp(prefix=".restore.", dir=attachments_dir.parent))
    try:
        new_files = stage_files / "attachments"
        private_dir(new_files)

        def place(name: str) -> Path:
            if name == STORE_MEMBER:
                return stage_store / STORE_MEMBER
            return new_files / name.removeprefix("attachments/")

        report = _read(archive, place)
        if report.schema > latest_version():
            raise BackupError(
                f"{archive} was written by a newer syncd (schema {report.schema}, this one "
                f"knows {latest_version()}); restore it with that version"
            )
        for suffix in ("-wal", "-shm", "-journal"):
            store.with_name(store.name + suffix).unlink(missing_ok=True)
        os.replace(stage_store / STORE_MEMBER, store)
        if attachments_dir.exists():
            os.replace(attachments_dir, stage_files / "replaced")
        os.replace(new_files, attachments_dir)
        sync_dir(store.parent)
        sync_dir(attachments_dir.parent)
        problems = _check_restored(store, attachments_dir, report.counts)
        if problems:
            raise DamagedArchive(archive, problems)
        return report
    finally:
        shutil.rmtree(stage_store, ignore_errors=True)
        shutil.rmtree(stage_files, ignore_errors=True)


def _check_restored(store: Path, attachments_dir: Path, counts: dict[str, int]) -> list[str]:
    """The restored store, where the config says, against the manifest it came with."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        got = _counts(conn)
        listed = [
            r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM attachments WHERE stored = 1")
        ]
    finally:
        conn.close()
    problems = [f"restored {got[k]} {k}, expected {v}" for k, v in counts.items() if got[k] != v]
    missing = [d for d in listed if not blob_path(attachments_dir, d).is_file()]
    if missing:
        problems.append(f"{len(missing)} attachment file(s) were not restored")
    return problems
