"""`syncd backup`, `backup --check` and `restore` as an admin runs them: the real CLI as a
subprocess, real archives on disk, and a real daemon taking BCC mail over SMTP meanwhile."""

from __future__ import annotations

import hashlib
import json
import smtplib
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.integration.conftest import Notify, free_port, syncd_run, write_mbox

ADA = "ada@example.com"
LOG = "log@crm.example.com"


def mail(n: int, *, tag: str = "") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Ada <{ADA}>"
    message["To"] = f"client{n % 3}@client{n % 3}.example"
    message["Subject"] = f"zebra plan {n}"
    message["Message-ID"] = f"<{tag}{n}.{uuid.uuid4().hex}@example.com>"
    message["Date"] = "Mon, 03 Nov 2025 10:00:00 +0000"
    message.set_content(f"offer number {n}")
    blob = hashlib.sha256(f"{tag}{n}".encode()).digest() * 200
    message.add_attachment(blob, maintype="application", subtype="pdf", filename=f"offer{n}.pdf")
    return message


def write_config(tmp_path: Path, name: str = "var", extra: str = "") -> Path:
    store = tmp_path / name
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"store:\n  path: {store / 'syncd.sqlite3'}\n  attachments_dir: {store / 'files'}\n"
        f"team: [{{name: Ada, email: {ADA}}}]\n{extra}",
        encoding="utf-8",
    )
    return config


def syncd(config: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, umask=umask,
    )  # fmt: skip


def ok(config: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    result = syncd(config, *args, umask=umask)
    assert result.returncode == 0, result.stderr
    return result


def seen(config: Path) -> dict[str, object]:
    """What a user reads from the store: a timeline, a search, the attachments' bytes."""
    files = config.parent / config.stem / "files"
    return {
        "timeline": json.loads(ok(config, "timeline", "client0@client0.example", "--json").stdout),
        "search": json.loads(ok(config, "search", "zebra", "--json").stdout),
        "files": {
            p.relative_to(files).as_posix(): p.read_bytes()
            for p in sorted(files.rglob("*"))
            if p.is_file()
        },
    }


@pytest.fixture
def config(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    mbox = write_mbox(tmp_path / "mail.mbox", *(mail(n) for n in range(6)))
    ok(config, "import", str(mbox), "--owner", ADA)
    return config


def test_round_trip_gives_back_the_same_records_and_files(config: Path, tmp_path: Path) -> None:
    before = seen(config)
    assert len(before["files"]) == 6  # type: ignore[arg-type]
    archive = tmp_path / "backups" / "syncd.tar.gz"
    archive.parent.mkdir()
    result = ok(config, "backup", str(archive), umask=0)
    assert result.stderr.splitlines() == [
        f"{archive}: backup written and verified, 6 emails, 3 contacts, 6 attachment files, "
        f"{archive.stat().st_size} bytes"
    ]
    assert archive.stat().st_mode & 0o777 == 0o600
    assert list(archive.parent.iterdir()) == [archive]  # no temporary files left

    document = json.loads(ok(config, "backup", "--check", str(archive), "--json").stdout)
    assert document["verified"] is True
    assert document["counts"]["emails"] == 6 and document["counts"]["attachment_files"] == 6

    store_dir = tmp_path / "var"
    for path in sorted(store_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    store_dir.rmdir()
    result = ok(config, "restore", str(archive), umask=0)
    assert len(result.stderr.splitlines()) == 1 and "restored from" in result.stderr
    assert seen(config) == before
    assert (store_dir / "syncd.sqlite3").stat().st_mode & 0o777 == 0o600
    for path in [store_dir, *(store_dir / "files").rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


def test_backup_and_restore_refuse_to_replace_without_force(config: Path, tmp_path: Path) -> None:
    dest = tmp_path / "existing.tar"
    dest.write_bytes(b"last week's backup")
    result = syncd(config, "backup", str(dest))
    assert result.returncode == 1
    assert result.stderr == f"syncd: {dest} exists; give --force to replace it\n"
    assert dest.read_bytes() == b"last week's backup"
    ok(config, "backup", str(dest), "--force")
    assert tarfile.is_tarfile(dest)

    before = seen(config)
    ok(config, "notes", "add", "client0@client0.example", "written after the backup")
    result = syncd(config, "restore", str(dest))
    assert result.returncode == 1
    assert result.stderr == (
        f"syncd: {tmp_path / 'var' / 'syncd.sqlite3'} exists; give --force to replace it\n"
    )
    ok(config, "restore", str(dest), "--force")
    assert seen(config) == before  # the note written after the backup is gone


def flip_byte(archive: Path, member: str) -> None:
    with tarfile.open(archive) as tar:
        info = next(i for i in tar.getmembers() if i.name.startswith(member))
    data = bytearray(archive.read_bytes())
    data[info.offset_data + info.size // 2] ^= 0x01
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["syncd.sqlite3", "attachments/"])
def test_a_flipped_byte_is_found_by_check_and_by_restore(
    config: Path, tmp_path: Path, member: str
) -> None:
    archive = tmp_path / "syncd.tar"
    ok(config, "backup", str(archive))
    flip_byte(archive, member)

    result = syncd(config, "backup", "--check", str(archive))
    assert result.returncode == 1
    assert result.stderr.startswith(f"syncd: {archive} is damaged: {member}")
    assert "does not match its checksum" in result.stderr
    assert len(result.stderr.splitlines()) == 1

    ok(config, "notes", "add", "client0@client0.example", "written after the backup")
    kept = seen(config)
    result = syncd(config, "restore", str(archive), "--force")
    assert result.returncode == 1 and f"{archive} is damaged: {member}" in result.stderr
    assert seen(config) == kept  # nothing was replaced: the note is still there

    elsewhere = write_config(tmp_path, "fresh")
    assert syncd(elsewhere, "restore", str(archive)).returncode == 1
    assert not (tmp_path / "fresh" / "syncd.sqlite3").exists()
    assert not (tmp_path / "fresh" / "files").exists()


def test_check_names_what_is_not_an_archive(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    result = syncd(config, "backup", "--check", str(junk))
    assert result.returncode == 1 and result.stderr.startswith(f"syncd: {junk} is damaged:")
    missing = syncd(config, "backup", "--check", str(tmp_path / "nope.tar"))
    assert missing.returncode == 1
    assert missing.stderr == f"syncd: no archive at {tmp_path / 'nope.tar'}\n"


# --- while the daemon runs and BCC mail arrives --------------------------------------------


def archive_contents(archive: Path, scratch: Path) -> tuple[dict, dict[str, int], set, dict]:
    """The manifest, the store copy's counts and listed files, and the members' sha256."""
    members: dict[str, str] = {}
    with tarfile.open(archive) as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == "manifest.json":
                manifest = json.loads(data)
            else:
                members[info.name] = hashlib.sha256(data).hexdigest()
            if info.name == "syncd.sqlite3":
                (scratch / "copy.sqlite3").write_bytes(data)
    conn = sqlite3.connect(scratch / "copy.sqlite3")
    counts = {
        "emails": conn.execute("SELECT count(*) FROM emails").fetchone()[0],
        "contacts": conn.execute("SELECT count(*) FROM contacts").fetchone()[0],
        "attachments": conn.execute("SELECT count(*) FROM attachments").fetchone()[0],
        "spooled": conn.execute("SELECT count(*) FROM spool").fetchone()[0],
    }
    listed = {
        r[0] for r in conn.execute("SELECT sha256 FROM attachments WHERE stored = 1").fetchall()
    }
    conn.close()
    return manifest, counts, listed, members


def test_backup_while_the_daemon_takes_bcc_mail(tmp_path: Path, notify: Notify) -> None:
    port = free_port()
    bcc = f"bcc: {{listen: '127.0.0.1:{port}', addresses: [{LOG}], verify_sender: none}}\n"
    config = write_config(tmp_path, extra=bcc)
    acked: list[int] = []
    stop = threading.Event()

    def sender(worker: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            n = worker
            while not stop.is_set():
                smtp.sendmail(ADA, [LOG], mail(n, tag=f"w{worker}-").as_bytes(policy=SMTP))
                acked.append(n)
                n += 2

    with syncd_run(config, notify, stderr=subprocess.DEVNULL) as daemon:
        try:
            threads = [threading.Thread(target=sender, args=(w,)) for w in range(2)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(acked) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            archives = []
            for name in ("first.tar", "second.tar.gz"):
                result = syncd(config, "backup", str(tmp_path / name), "--json")
                assert result.returncode == 0, result.stderr
                assert json.loads(result.stdout)["verified"] is True
                archives.append(tmp_path / name)
            refused = syncd(config, "restore", str(archives[0]), "--force")
            sent_during = len(acked)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            assert daemon.stop(30) == 0
        finally:
            stop.set()

    assert sent_during >= 20
    assert refused.returncode == 75
    assert refused.stderr == (
        f"syncd: `syncd run` is using the store {tmp_path / 'var' / 'syncd.sqlite3'}; "
        "stop it before restoring\n"
    )
    logged = []
    for archive in archives:
        manifest, counts, listed, members = archive_contents(archive, tmp_path)
        assert {k: manifest["counts"][k] for k in counts} == counts
        assert manifest["sha256"] == members
        for digest in listed:
            assert members[f"attachments/{digest[:2]}/{digest[2:4]}/{digest}"] == digest
        assert len(members) == 1 + len(listed)  # the store copy and exactly what it lists
        logged.append((counts["emails"], len(listed)))
    assert (0, 0) < logged[0] <= logged[1]
    assert all(files > 0 for _emails, files in logged)
