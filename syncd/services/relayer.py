"""What the submission relay does with one message: decide, rewrite, relay, record.

``Relayer.forward`` runs in the relay worker process (``services.relayworker``), in one of
its threads, while the member's client waits in DATA:

1. Who is tracked (``crm.tracked``): the recipients outside the team, looked up as
   contacts on a read-only connection of this thread (bounded: past
   ``LOOKUP_SECONDS`` the message is relayed untracked, never delayed).
2. Rewriting (``outbound.rewrite``) with signed tokens (``outbound.tokens``); the
   tracked message id is an HMAC of the message key, so a resend is the same message.
   Signed or encrypted mail comes back untouched and is logged untracked.
3. Relaying (``outbound.relay.Submitter``): the smarthost's own reply is the client's;
   a refusal is passed back and nothing is recorded.
4. On the smarthost's 250, the ORIGINAL message is spooled (source ``relay``) with its
   tracked message and the member's (truncated) address in ONE FULL-sync commit
   (``store.spool.SpoolWriter``, group commit), then 250. The drain
   (``services.bcc.drain_spool``) logs it through the pipeline exactly once and ties
   the tracking to the engagement (``store.tracking.mark_logged``), status ``sent``.

A crash after the 250 leaves the message in the spool: the next start drains it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from syncd import hosts
from syncd.config.model import Config
from syncd.crm.team import Team
from syncd.crm.tracked import Known, Tracking, decide, external_recipients
from syncd.mail.addresses import normalise
from syncd.mail.parse import header_fields, key_of, parse_addresses
from syncd.outbound.relay import Relay, RelaySettings, Submitter
from syncd.outbound.rewrite import rewrite
from syncd.outbound.tokens import Signer, load_keys, tracked_message_id
from syncd.secrets import read_password
from syncd.sources.bcc import TEMPFAIL
from syncd.sources.senders import envelope_tag
from syncd.sources.submission import Forwarded, Outgoing
from syncd.store import db, spool, tracking

log = logging.getLogger("syncd.submission")
LOOKUP_SECONDS = 2.0
NOT_RECORDED = "451 4.3.0 The message was relayed but could not be logged; syncd's store is failing"


class TrackingSetup:
    """What rewriting needs: the signer, the id secret, the public URL, pixel position."""

    def __init__(self, keys: dict[str, bytes], public_url: str, pixel: str) -> None:
        current = next(iter(keys))
        self.signer = Signer(keys, current)
        self.secret = keys[current]
        self.public_url = public_url.rstrip("/")
        self.pixel = pixel

    @classmethod
    def from_config(cls, config: Config) -> TrackingSetup | None:
        t = config.tracking
        if not t.enabled or t.secret_file is None or not t.public_url:
            return None
        keys = load_keys(t.secret_file.read_text(encoding="utf-8"))
        return cls(keys, t.public_url, t.pixel)


class Relayer:
    """``forward`` for the submission handler: decide, rewrite, relay, record."""

    def __init__(
        self,
        *,
        team: Team,
        submitter: Submitter,
        record: spool.SpoolWriter,
        store_path: Any,
        setup: TrackingSetup | None,
        require_legal_basis: bool = False,
        keep_full_ips: bool = False,
        clock: Any = time.time,
    ) -> None:
        self.team = team
        self.submitter = submitter
        self.record = record
        self.store_path = store_path
        self.setup = setup
        self.require_legal_basis = require_legal_basis
        self.keep_full_ips = keep_full_ips
        self.clock = clock
        self._local = threading.local()

    # The store, read-only, one connection per worker thread ----------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = db.connect(self.store_path, readonly=True)
            self._local.conn = conn
        return conn

    def _bounded(self, fn: Any, *args: Any) -> Any:
        """``fn(conn, *args)`` on this thread's reader, interrupted past LOOKUP_SECONDS."""
        conn = self._reader()
        deadline = time.monotonic() + LOOKUP_SECONDS
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            return fn(conn, *args)
        finally:
            conn.set_progress_handler(None, 0)

    def who(self, raw: bytes, recipients: tuple[str, ...]) -> Tracking:
        fields = header_fields(raw)
        named = [a.email for n in ("to", "cc", "bcc") for a in parse_addresses(fields.get(n), [])]
        external = external_recipients([*named, *recipients], self.team)
        known: dict[str, Known] = {}
        if external:
            try:
                found = self._bounded(tracking.known_recipients, external)
            except Exception as error:  # a slow or unreadable store: relay untracked
                log.warning("contacts not looked up (%s): relayed untracked", error)
                return Tracking("contacts could not be looked up in time")
            known = {a: Known(cid, basis) for a, (cid, basis) in found.items()}
        return decide(external, known, require_legal_basis=self.require_legal_basis)

    def _unwrap(self, url: str) -> str | None:
        """An old tracked link of ours (quoted history) back to its destination."""
        assert self.setup is not None
        verified = self.setup.signer.verify(url.rsplit("/", 1)[-1])
        if verified is None or verified.link_index is None:
            return None
        try:
            return self._bounded(tracking.link_url, verified.message_id, verified.link_index)
        except Exception:
            return None

    def prepare(
        self, message: Outgoing, key: str, at: datetime
    ) -> tuple[bytes, tracking.TrackedMessage | None]:
        """The bytes to relay and the tracked message to record (None: untracked)."""
        setup = self.setup
        if setup is None:
            return message.raw, None
        decision = self.who(message.raw, message.recipients)
        if not decision.tracked:
            return message.raw, None
        mid = tracked_message_id(setup.secret, key)
        base = setup.public_url
        done = rewrite(
            message.raw,
            link_url=lambda i: f"{base}/c/{setup.signer.click_token(mid, i)}",
            pixel_url=f"{base}/o/{setup.signer.open_token(mid)}.gif",
            public_url=base,
            pixel_position="top" if setup.pixel == "top" else "bottom",
            unwrap=self._unwrap,
        )
        if done.untracked is not None or not (done.pixel or done.links):
            return message.raw, None
        tracked = tracking.TrackedMessage(
            id=mid,
            message_key=key,
            sender=normalise(message.member),
            relayed_at=at,
            links=done.links,
            contact_id=decision.contact_id,
            anonymous=decision.anonymous,
        )
        return done.raw, tracked

    def forward(self, message: Outgoing) -> Forwarded:
        key = key_of(message.raw)
        out, tracked = self.prepare(message, key, datetime.now(UTC))
        answer = self.submitter.submit(out, message.mail_from, message.recipients)
        if not answer.accepted:
            if answer.from_smarthost and 400 <= answer.code < 600:
                return Forwarded(answer.line, "refused.smarthost")
            line = answer.line if 400 <= answer.code < 500 else TEMPFAIL
            return Forwarded(line, "tempfail")
        at = datetime.fromtimestamp(self.clock(), UTC)
        if tracked is not None:
            tracked = tracking.TrackedMessage(
                tracked.id, tracked.message_key, tracked.sender, at, tracked.links,
                tracked.contact_id, tracked.anonymous,
            )  # fmt: skip
        ip = None
        if self.setup is not None and message.peer_ip:
            ip = message.peer_ip if self.keep_full_ips else hosts.truncate(message.peer_ip)
        also = partial(tracking.record_relayed, message=tracked, member=normalise(message.member),
                       ip=ip, at=at)  # fmt: skip
        # A Bcc to a tagged logging address (log+deal-42@) picks the records of the copy
        # logged here too, not only of the one the BCC endpoint gets later.
        tag = envelope_tag(message.recipients, self.team.bcc_addresses)
        try:
            self.record(
                message.raw, message.mail_from, message.peer_ip, normalise(message.member),
                source="relay", also=also, **({"tag": tag} if tag else {}),
            )  # fmt: skip
        except Exception as error:
            # The smarthost has it; the client will retry and the recipient may get it
            # twice, but what is in the CRM stays what was sent, once.
            log.error("relayed mail from %s not recorded: %s", message.member, error)
            return Forwarded(NOT_RECORDED, "tempfail")
        return Forwarded(answer.line, "relayed")

    def close(self) -> None:
        self.submitter.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def make_submitter(config: Config) -> Submitter:
    relay = config.smarthost
    assert relay is not None
    settings = RelaySettings(relay.host, relay.port, relay.security, relay.username)
    password = (lambda: read_password(relay)) if relay.username else (lambda: None)
    return Submitter(Relay(settings, password))


def make_relayer(config: Config, record: spool.SpoolWriter, setup: TrackingSetup | None) -> Relayer:
    """The Relayer ``config`` describes, recording through ``record``."""
    return Relayer(
        team=Team.from_config(config),
        submitter=make_submitter(config),
        record=record,
        store_path=config.store.path,
        setup=setup,
        require_legal_basis=bool(config.privacy.require_legal_basis),
        keep_full_ips=config.tracking.keep_full_ips,
    )
