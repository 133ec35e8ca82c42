"""Pure decisions of the IMAP sync: which folders, which window, what to fetch next.

The IMAP adapter asks this module every question whose answer depends only on values:
the per-folder checkpoint and the server's status of that folder give a ``FolderPlan``;
``from`` and the sync's start instant give the window; a LIST result gives the folders;
UIDs with sizes give bounded batches; header bytes and the contact set say whether a past
message is wanted. Nothing here does I/O, so every rule is tested by a table.

Per-folder state machine (the state is the stored ``FolderCheckpoint``)::

        no checkpoint                      UIDVALIDITY differs from the checkpoint
      ────────────────► INITIAL ◄──────────────────────────────────── (any state)
                         │  ▲  each committed batch: last_uid = max UID of the batch
                         │  └─ resumed after a crash: UIDs > last_uid, same window
                         │
                         │  scan reached the UIDNEXT-1 seen when the scan began:
                         │  last_uid = that UID, initial_done = True
                         ▼
                       LIVE ── UIDNEXT-1 > last_uid ──► INCREMENTAL (UIDs > last_uid,
                         ▲                                 no window, no people filter)
                         └──────────── batch committed ────────┘

INITIAL pulls mail whose INTERNALDATE is on or after the window start (SEARCH SINCE the
day before, because SEARCH ignores time and timezone, then an exact filter). With
``people: contacts`` it keeps only messages that involve a contact known when the sync
started, and only for mail older than ``initial_started``: mail that arrived after the
initial sync began is always wanted, even when a UIDVALIDITY change makes us scan it again.
The window is computed from ``initial_started``, not from today, so a scan resumed days
later or redone after a UIDVALIDITY change covers the same past. A UID that exists but
cannot be fetched holds the cursor just below it (``checkpoint_before``) in any state, so
the next pass starts with it again; the cursor counts the passes that stopped at that UID,
and after ``MAX_STUCK_PASSES`` of them the next pass gives it up (``gives_up``): the
adapter quarantines a note naming it and the cursor moves on, so one message that kills
or stalls every fetch never holds the folder forever.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from syncd.mail.parse import header_addresses
from syncd.sources.imap.folders import (
    UNSELECTABLE_FLAGS,
    Namespace,
    Resolution,
    Resolved,
    Unresolved,
    flag_text,
    resolve,
)

FROM_MONTHS = {"1m": 1, "3m": 3, "6m": 6, "1y": 12}
# SPECIAL-USE flag -> the names (case-folded, last path component) that mean the same
# on a server where no folder has that flag.
LEFT_OUT = {
    "\\junk": frozenset({"junk", "junk e-mail", "junk email", "spam", "bulk mail"}),
    "\\trash": frozenset({
        "trash", "deleted", "deleted items", "deleted messages", "bin", "papierkorb",
        "corbeille", "papelera",
    }),
}  # fmt: skip
# Passes in a row that may stop at the same UID before it is given up: a server fault or
# a crash gets a few chances to go away; a message that fails every time does not hold
# its folder for more than these.
MAX_STUCK_PASSES = 3
MAX_IDLE_SECONDS = 9 * 60.0  # RFC 2177: re-issue IDLE at least every 29 min; servers cut at 10+


@dataclass(frozen=True, slots=True)
class FolderCheckpoint:
    """The durable cursor of one folder of one inbox."""

    inbox: str
    folder: str
    uidvalidity: int
    last_uid: int = 0
    highestmodseq: int | None = None
    initial_done: bool = False
    initial_started: datetime | None = None  # when the past (initial) sync began
    stuck_uid: int = 0  # a UID that stopped the last pass(es), just above last_uid
    stuck_passes: int = 0  # how many passes in a row it stopped


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What EXAMINE said about a folder."""

    uidvalidity: int
    uidnext: int
    exists: int = 0
    highestmodseq: int | None = None


class Action(StrEnum):
    NOTHING = "nothing"  # up to date
    INITIAL = "initial"  # the past scan (first, resumed, or after a UIDVALIDITY change)
    INCREMENTAL = "incremental"  # new UIDs since the cursor


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """What to fetch from one folder now."""

    action: Action
    after_uid: int  # fetch UIDs greater than this
    scan_top: int  # ... and not greater than this (UIDNEXT-1 at EXAMINE)
    since: date | None  # SEARCH SINCE, or None for no date criterion
    window_start: datetime | None  # exact INTERNALDATE filter, None for none
    people_before: datetime | None  # the people filter applies to mail older than this
    base: FolderCheckpoint  # the cursor to advance batch by batch
    # An INITIAL scan of a folder that has a cursor (a UIDVALIDITY rescan, or a scan
    # resumed): some of its mail may be logged from it already.
    check_logged: bool = False

    def checkpoint_after(self, uids: Sequence[int], *, last: bool) -> FolderCheckpoint:
        """The cursor once the batch ``uids`` is committed; ``last`` closes the plan."""
        top = max([self.base.last_uid, *uids])
        if last:
            top = max(top, self.scan_top)
        done = self.base.initial_done or (last and self.action is Action.INITIAL)
        past = top >= self.base.stuck_uid
        return _replace(
            self.base,
            last_uid=top,
            initial_done=done,
            stuck_uid=0 if past else self.base.stuck_uid,
            stuck_passes=0 if past else self.base.stuck_passes,
        )

    def checkpoint_before(self, uid: int) -> FolderCheckpoint:
        """The cursor when ``uid`` exists but could not be fetched (or is about to be tried
        at a risk, see ``imap_fetch``): every UID below it is done; it and all above it are
        fetched again next pass (the plan stays open). Counted once per pass."""
        again = self.base.stuck_uid == uid
        return _replace(
            self.base,
            last_uid=max(self.base.last_uid, uid - 1),
            stuck_uid=uid,
            stuck_passes=self.base.stuck_passes + 1 if again else 1,
        )

    def gives_up(self, uid: int) -> bool:
        """Whether ``uid`` stopped the last ``MAX_STUCK_PASSES`` passes: not tried again."""
        return self.base.stuck_uid == uid and self.base.stuck_passes >= MAX_STUCK_PASSES


def _replace(cp: FolderCheckpoint, **changes: object) -> FolderCheckpoint:
    fields = {name: getattr(cp, name) for name in FolderCheckpoint.__slots__}
    fields.update(changes)
    return FolderCheckpoint(**fields)  # type: ignore[arg-type]


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier, clamped to the month's end."""
    total = day.year * 12 + (day.month - 1) - months
    year, month = divmod(total, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def window_start(from_: str, started: datetime) -> datetime:
    """First INTERNALDATE the past sync wants: ``now`` is ``started`` itself; the rest
    are midnight (in ``started``'s timezone) of the day that far back, or of the date."""
    if started.tzinfo is None:
        raise ValueError("started must be timezone-aware")
    if from_ == "now":
        return started
    if from_ in FROM_MONTHS:
        day = months_before(started.date(), FROM_MONTHS[from_])
    else:
        day = date.fromisoformat(from_)
    return datetime.combine(day, time(0), tzinfo=started.tzinfo)


def search_since(start: datetime) -> date:
    """SEARCH SINCE date covering ``start`` whatever the timezone of INTERNALDATE."""
    return start.astimezone(UTC).date() - timedelta(days=1)


def plan_folder(
    checkpoint: FolderCheckpoint | None,
    status: FolderStatus,
    *,
    inbox: str,
    folder: str,
    from_: str,
    people: str,
    now: datetime,
) -> FolderPlan:
    """What to fetch from a folder given its stored cursor and what EXAMINE said."""
    scan_top = max(status.uidnext - 1, 0)
    rescan = checkpoint is not None and checkpoint.uidvalidity != status.uidvalidity
    if checkpoint is None or rescan:
        started = checkpoint.initial_started if checkpoint and checkpoint.initial_started else now
        base = FolderCheckpoint(inbox, folder, status.uidvalidity, 0, None, False, started)
    else:
        base = checkpoint
    base = _replace(base, highestmodseq=status.highestmodseq or base.highestmodseq)
    if not base.initial_done:
        started = base.initial_started or now
        base = _replace(base, initial_started=started)
        start = window_start(from_, started)
        return FolderPlan(
            Action.INITIAL,
            base.last_uid,
            scan_top,
            search_since(start),
            start,
            started if people == "contacts" else None,
            base,
            checkpoint is not None,
        )
    if scan_top <= base.last_uid:
        return FolderPlan(Action.NOTHING, base.last_uid, base.last_uid, None, None, None, base)
    return FolderPlan(Action.INCREMENTAL, base.last_uid, scan_top, None, None, None, base)


def in_window(internal_date: datetime | None, plan: FolderPlan) -> bool:
    """The exact window filter after SEARCH SINCE; mail without a date is kept."""
    if plan.window_start is None or internal_date is None:
        return True
    return _aware(internal_date) >= plan.window_start


def needs_people_check(internal_date: datetime | None, plan: FolderPlan) -> bool:
    """Whether a message must involve a contact to be pulled under this plan."""
    if plan.people_before is None:
        return False
    return internal_date is None or _aware(internal_date) < plan.people_before


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def participants(header_block: bytes) -> set[str]:
    """Lower-cased addresses in From, To, Cc and Bcc of a raw header block, read by the
    parser the pipeline's rules use, so the prefilter and the rules agree on what an
    address is (quoted local parts and CVE-2023-27043 forms are no address at all)."""
    return {addr.email for addr in header_addresses(header_block)}


def involves_contact(header_block: bytes, contacts: Iterable[str] | set[str]) -> bool:
    known = contacts if isinstance(contacts, set | frozenset) else set(contacts)
    return not participants(header_block).isdisjoint(known)


@dataclass(frozen=True, slots=True)
class FolderChoice:
    folders: tuple[str, ...]  # server folders to sync, each once (INBOX first for ``all``)
    missing: tuple[str, ...]  # configured names no server folder answers to
    # Per configured name, in the configured order: the folder it means, or why none.
    resolved: tuple[Resolution, ...] = ()


def choose_folders(
    listing: Iterable[tuple[Sequence[bytes | str], str]],
    wanted: str | Sequence[str],
    personal: Namespace = (),
) -> FolderChoice:
    """Folders to sync from a LIST result of (flags, name) pairs and the ``folders`` key;
    configured names are resolved (``folders.resolve``) with the personal namespaces."""
    listing = list(listing)
    entries = [(frozenset(flag_text(f) for f in flags), name) for flags, name in listing]
    selectable = [(flags, name) for flags, name in entries if not flags & UNSELECTABLE_FLAGS]
    if wanted == "all":
        # Per use: a server that flags its Trash but not its Junk still has its Junk
        # found by name.
        flagged = {use for flags, _ in entries for use in flags if use in LEFT_OUT}
        chosen = [name for flags, name in selectable if not _left_out(flags, name, flagged)]
        return FolderChoice(tuple(_inbox_first(chosen)), ())
    resolved = tuple(resolve(list(wanted), listing, personal))
    found = (r.folder for r in resolved if isinstance(r, Resolved))
    missing = tuple(r.configured for r in resolved if isinstance(r, Unresolved))
    return FolderChoice(tuple(dict.fromkeys(found)), missing, resolved)


def _left_out(flags: frozenset[str], name: str, flagged: set[str]) -> bool:
    """Junk or Trash: by its SPECIAL-USE flag, or by name for a use no folder is flagged."""
    leaf = name.replace("\\", "/").split("/")[-1].split(".")[-1].casefold()
    return any(use in flags if use in flagged else leaf in names for use, names in LEFT_OUT.items())


def _inbox_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: n.upper() != "INBOX")


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def body_batches(
    sizes: Sequence[tuple[int, int]],
    *,
    max_count: int,
    max_bytes: int,
    alone_above: int | None = None,
) -> Iterator[list[int]]:
    """UIDs grouped in order, each batch at most ``max_count`` messages and ``max_bytes``
    (a message larger than ``max_bytes``, or than ``alone_above``, travels alone)."""
    batch: list[int] = []
    total = 0
    for uid, size in sizes:
        alone = alone_above is not None and (size > alone_above or total > alone_above)
        if batch and (len(batch) >= max_count or total + size > max_bytes or alone):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def backoff_delay(attempt: int, jitter: float, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, capped, with
    ``jitter`` in [0, 1) spreading it over [half, full] so inboxes do not retry in step."""
    full = min(cap, base * (2 ** max(attempt, 0)))
    return full * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def inbox_retry_delay(state: str, failures: int, jitter: float, *, poll_interval: float) -> float:
    """When the daemon should try an inbox again after a failed pass. An authentication
    failure waits an hour (a wrong password does not fix itself; hammering gets accounts
    locked); other failures back off from 5 s up to the poll interval."""
    if state == "auth_failed":
        return backoff_delay(failures, jitter, base=3600.0, cap=6 * 3600.0)
    if state == "failed":
        return backoff_delay(failures, jitter, base=5.0, cap=max(poll_interval, 5.0))
    return poll_interval


def idle_retry_delay(failures: int, jitter: float, *, left: float) -> float:
    """How long to wait after the ``failures``-th IDLE in a row ended in an error, at most
    the ``left`` of the poll interval: 5 s doubling, so a server that drops IDLE at once
    gets a pass every few minutes at worst, not a pass per round trip."""
    return min(max(left, 0.0), backoff_delay(failures - 1, jitter, base=5.0))


def idle_slices(timeout: float, max_idle: float = MAX_IDLE_SECONDS) -> list[float]:
    """Split a wait into IDLE commands no longer than ``max_idle`` each."""
    out: list[float] = []
    left = max(timeout, 0.0)
    while left > 0:
        out.append(min(left, max_idle))
        left -= out[-1]
    return out


def count_outcomes(statuses: Iterable[str]) -> Mapping[str, int]:
    """Outcome statuses counted as the sync --json folder counts."""
    counts = {"logged": 0, "duplicates": 0, "skipped": 0, "quarantined": 0}
    names = {"logged": "logged", "duplicate": "duplicates", "skipped": "skipped"}
    for status in statuses:
        counts[names.get(status, "quarantined")] += 1
    return counts
