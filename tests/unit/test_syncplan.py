"""Table tests of the IMAP sync decisions in syncd.sources.imap.syncplan."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from syncd.sources.imap import syncplan
from syncd.sources.imap.syncplan import Action, FolderCheckpoint, FolderStatus

NOW = datetime(2024, 5, 31, 15, 30, tzinfo=UTC)
CET = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("from_", "started", "expected"),
    [
        ("now", NOW, NOW),
        ("1m", NOW, datetime(2024, 4, 30, tzinfo=UTC)),  # May 31 -> April has 30 days
        ("3m", NOW, datetime(2024, 2, 29, tzinfo=UTC)),  # leap year clamp
        ("6m", NOW, datetime(2023, 11, 30, tzinfo=UTC)),
        ("1y", NOW, datetime(2023, 5, 31, tzinfo=UTC)),
        ("1y", datetime(2024, 2, 29, 8, tzinfo=UTC), datetime(2023, 2, 28, tzinfo=UTC)),
        ("1m", datetime(2024, 1, 15, tzinfo=UTC), datetime(2023, 12, 15, tzinfo=UTC)),
        ("2023-07-04", NOW, datetime(2023, 7, 4, tzinfo=UTC)),
        ("1m", datetime(2024, 3, 10, 1, tzinfo=CET), datetime(2024, 2, 10, tzinfo=CET)),
    ],
)
def test_window_start(from_: str, started: datetime, expected: datetime) -> None:
    assert syncplan.window_start(from_, started) == expected


@pytest.mark.parametrize("bad", ["two weeks", "2024-13-01", ""])
def test_window_start_refuses_bad_from(bad: str) -> None:
    with pytest.raises(ValueError):
        syncplan.window_start(bad, NOW)


def test_window_start_needs_aware_instant() -> None:
    with pytest.raises(ValueError):
        syncplan.window_start("1m", datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("start", "since"),
    [
        (datetime(2024, 3, 1, tzinfo=UTC), date(2024, 2, 29)),
        (datetime(2024, 3, 1, 1, tzinfo=CET), date(2024, 2, 28)),  # 2024-02-29T23:00Z
        (datetime(2024, 1, 1, 12, tzinfo=UTC), date(2023, 12, 31)),
    ],
)
def test_search_since_is_the_day_before(start: datetime, since: date) -> None:
    assert syncplan.search_since(start) == since


def cp(**kw: object) -> FolderCheckpoint:
    base = {"inbox": "ada", "folder": "INBOX", "uidvalidity": 7, "last_uid": 10}
    base.update(initial_done=True, initial_started=NOW - timedelta(days=3))
    base.update(kw)
    return FolderCheckpoint(**base)  # type: ignore[arg-type]


EARLIER = NOW - timedelta(days=3)


@pytest.mark.parametrize(
    ("checkpoint", "status", "people", "action", "after", "top", "people_before", "check_logged"),
    [
        # first sync: the past scan up to UIDNEXT-1, people filter for mail before now
        (None, FolderStatus(7, 51), "contacts", Action.INITIAL, 0, 50, NOW, False),
        (None, FolderStatus(7, 51), "all", Action.INITIAL, 0, 50, None, False),
        (None, FolderStatus(7, 1), "all", Action.INITIAL, 0, 0, None, False),  # empty folder
        # resumed past scan keeps its start instant (window and people cut-off); mail from
        # it may be logged already
        (cp(initial_done=False), FolderStatus(7, 51), "contacts", Action.INITIAL, 10, 50,
         EARLIER, True),
        # live: up to date, or new UIDs without any filter
        (cp(), FolderStatus(7, 11), "contacts", Action.NOTHING, 10, 10, None, False),
        (cp(), FolderStatus(7, 5), "all", Action.NOTHING, 10, 10, None, False),  # expunged
        (cp(), FolderStatus(7, 15), "contacts", Action.INCREMENTAL, 10, 14, None, False),
        # UIDVALIDITY changed: scan again from UID 1, people cut at the first sync's start
        (cp(), FolderStatus(8, 4), "contacts", Action.INITIAL, 0, 3, EARLIER, True),
        (cp(), FolderStatus(8, 4), "all", Action.INITIAL, 0, 3, None, True),
    ],
)  # fmt: skip
def test_plan_folder(
    checkpoint: FolderCheckpoint | None,
    status: FolderStatus,
    people: str,
    action: Action,
    after: int,
    top: int,
    people_before: datetime | None,
    check_logged: bool,
) -> None:
    plan = syncplan.plan_folder(
        checkpoint, status, inbox="ada", folder="INBOX", from_="3m", people=people, now=NOW
    )
    assert (plan.action, plan.after_uid, plan.scan_top) == (action, after, top)
    assert plan.people_before == people_before
    assert plan.check_logged is check_logged
    assert plan.base.uidvalidity == status.uidvalidity


def test_initial_window_comes_from_the_first_start() -> None:
    plan = syncplan.plan_folder(
        cp(initial_done=False), FolderStatus(7, 20), inbox="ada", folder="INBOX",
        from_="1m", people="all", now=NOW,
    )  # fmt: skip
    assert plan.window_start == datetime(2024, 4, 28, tzinfo=UTC)
    assert plan.since == date(2024, 4, 27)
    incremental = syncplan.plan_folder(
        cp(), FolderStatus(7, 20), inbox="ada", folder="INBOX", from_="1m", people="all", now=NOW
    )
    assert (incremental.since, incremental.window_start) == (None, None)


def test_checkpoint_after_batches_and_the_last_one() -> None:
    plan = syncplan.plan_folder(
        None, FolderStatus(7, 101), inbox="ada", folder="INBOX", from_="1y", people="all", now=NOW
    )
    first = plan.checkpoint_after([3, 9, 4], last=False)
    assert (first.last_uid, first.initial_done, first.initial_started) == (9, False, NOW)
    # the scan reached UIDNEXT-1 even if the last wanted message had a lower UID
    last = plan.checkpoint_after([20], last=True)
    assert (last.last_uid, last.initial_done) == (100, True)
    assert plan.checkpoint_after([], last=True).last_uid == 100


@pytest.mark.parametrize(
    ("checkpoint", "uidnext", "stuck", "expected"),
    [
        (None, 101, 42, (41, False)),  # initial scan: stays open, resumes at the stuck UID
        (None, 101, 1, (0, False)),  # the very first message
        (FolderCheckpoint("ada", "INBOX", 7, 50, None, True, NOW), 101, 77, (76, True)),
        (FolderCheckpoint("ada", "INBOX", 7, 50, None, True, NOW), 101, 51, (50, True)),
        (FolderCheckpoint("ada", "INBOX", 7, 50, None, False, NOW), 101, 60, (59, False)),
    ],
)
def test_checkpoint_before_an_unfetchable_uid(
    checkpoint: FolderCheckpoint | None, uidnext: int, stuck: int, expected: tuple[int, bool]
) -> None:
    plan = syncplan.plan_folder(
        checkpoint, FolderStatus(7, uidnext), inbox="ada", folder="INBOX", from_="1y",
        people="all", now=NOW,
    )  # fmt: skip
    before = plan.checkpoint_before(stuck)
    assert (before.last_uid, before.initial_done) == expected
    assert before.uidvalidity == 7 and before.initial_started == NOW
    # a later pass plans from it and fetches the stuck UID first
    again = syncplan.plan_folder(
        before, FolderStatus(7, uidnext), inbox="ada", folder="INBOX", from_="1y",
        people="all", now=NOW,
    )  # fmt: skip
    assert again.after_uid == stuck - 1 and again.action is not Action.NOTHING


def test_highestmodseq_follows_the_server() -> None:
    plan = syncplan.plan_folder(
        cp(highestmodseq=5), FolderStatus(7, 11, highestmodseq=9), inbox="ada",
        folder="INBOX", from_="3m", people="all", now=NOW,
    )  # fmt: skip
    assert plan.action is Action.NOTHING and plan.base.highestmodseq == 9


@pytest.mark.parametrize(
    ("internal", "expected"),
    [
        (datetime(2024, 2, 29, 0, 0, tzinfo=UTC), True),
        (datetime(2024, 2, 28, 23, 59, 59, tzinfo=UTC), False),
        (datetime(2024, 2, 29, 1, 30, tzinfo=CET), False),  # 23:30Z the day before
        (datetime(2024, 2, 28, 22, 0, tzinfo=timezone(timedelta(hours=-3))), True),
        (None, True),
    ],
)
def test_in_window_is_exact(internal: datetime | None, expected: bool) -> None:
    plan = syncplan.plan_folder(
        None, FolderStatus(1, 2), inbox="a", folder="INBOX", from_="3m", people="all", now=NOW
    )
    assert syncplan.in_window(internal, plan) is expected


def test_people_check_only_for_mail_before_the_start() -> None:
    plan = syncplan.plan_folder(
        None, FolderStatus(1, 2), inbox="a", folder="INBOX", from_="3m", people="contacts",
        now=NOW,
    )  # fmt: skip
    assert syncplan.needs_people_check(NOW - timedelta(seconds=1), plan)
    assert not syncplan.needs_people_check(NOW, plan)
    assert syncplan.needs_people_check(None, plan)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: Ann <ANN@x.example>\r\nTo: b@y.example, c@z.example\r\n\r\n",
         {"ann@x.example", "b@y.example", "c@z.example"}),
        (b"Cc: =?utf-8?q?J=C3=BCrgen?= <j@x.example>\r\nBcc: k@x.example\r\n\r\n",
         {"j@x.example", "k@x.example"}),
        (b"To: undisclosed-recipients:;\r\n\r\n", set()),
        (b"From: \xff\xfe broken <ok@x.example>\r\n\r\n", {"ok@x.example"}),
        (b"", set()),
        (b"From: no address at all\r\n\r\n", set()),
        (b"To: =?bogus-charset?q?x?= <p@x.example>\r\n\r\n", {"p@x.example"}),
        # the same answers as the pipeline's parser (syncd.mail.parse.header_addresses):
        (b'From: "a@b.example"@evil.example\r\n\r\n', set()),  # quoted local part
        (b"From: alice@x.example)<bob@y.example>\r\n\r\n", set()),  # CVE-2023-27043
        (b'To: "Doe, J" <J@X.example>, "evil@z.example" <good@y.example>\r\n\r\n',
         {"j@x.example", "good@y.example"}),  # a name is never an address
        # an encoded name cannot smuggle in an address
        (b"From: =?utf-8?q?a=40evil.example=2C?= <b@x.example>\r\n\r\n", {"b@x.example"}),
        (b"To: Team: a@x.example, b@y.example;\r\n\r\n", {"a@x.example", "b@y.example"}),
        (b"From: a@x.example (Ann <c@x.example>)\r\n\r\n", {"a@x.example"}),
        (b"From: a@x.example\r\n b@y.example\r\n\r\n", set()),  # no comma: ambiguous
    ],
)  # fmt: skip
def test_participants(header: bytes, expected: set[str]) -> None:
    assert syncplan.participants(header) == expected


def test_involves_contact() -> None:
    header = b"From: a@x.example\r\nTo: b@y.example\r\n\r\n"
    assert syncplan.involves_contact(header, {"b@y.example"})
    assert not syncplan.involves_contact(header, {"c@y.example"})
    assert not syncplan.involves_contact(header, set())


SPECIAL = [
    ((b"\\HasNoChildren",), "INBOX"),
    ((b"\\HasNoChildren", b"\\Junk"), "Spam Folder"),
    ((b"\\Trash",), "Papelera de reciclaje"),
    ((b"\\Sent",), "Sent"),
    ((b"\\Noselect", b"\\HasChildren"), "[Gmail]"),
    ((b"\\All",), "[Gmail]/All Mail"),
    ((), "Projects/Acme"),
    ((), "Entwürfe"),
]
NO_SPECIAL = [
    ((), "Archive"),
    ((), "INBOX.Junk"),
    ((), "Trash"),
    ((), "Deleted Items"),
    ((), "INBOX"),
    ((b"\\NonExistent",), "Gone"),
]


@pytest.mark.parametrize(
    ("listing", "wanted", "folders", "missing"),
    [
        (SPECIAL, "all",
         ("INBOX", "Sent", "[Gmail]/All Mail", "Projects/Acme", "Entwürfe"), ()),
        (NO_SPECIAL, "all", ("INBOX", "Archive"), ()),
        (SPECIAL, ["inbox", "Sent", "Nope", "[Gmail]"], ("INBOX", "Sent"), ("Nope", "[Gmail]")),
        (SPECIAL, ["Spam Folder", "Entwürfe", "Entwürfe"], ("Spam Folder", "Entwürfe"), ()),
        (SPECIAL, ["projects/acme"], (), ("projects/acme",)),  # only INBOX is case-insensitive
        (SPECIAL, ["sent"], ("Sent",), ()),  # ... but "sent" names the \Sent role
        # Only Trash is flagged: Junk is still known by its name, and a Trash-named
        # folder that is not the flagged one is mail like any other.
        ([((b"\\Trash",), "Deleted"), ((), "Junk"), ((), "Trash"), ((), "INBOX")], "all",
         ("INBOX", "Trash"), ()),
        ([], "all", (), ()),
    ],
)  # fmt: skip
def test_choose_folders(
    listing: list, wanted: object, folders: tuple[str, ...], missing: tuple[str, ...]
) -> None:
    choice = syncplan.choose_folders(listing, wanted)  # type: ignore[arg-type]
    assert choice.folders == folders
    assert choice.missing == missing


@pytest.mark.parametrize(
    ("sizes", "count", "max_bytes", "expected"),
    [
        ([(1, 10), (2, 10), (3, 10)], 2, 100, [[1, 2], [3]]),
        ([(1, 60), (2, 50), (3, 10)], 10, 100, [[1], [2, 3]]),
        ([(1, 500), (2, 10)], 10, 100, [[1], [2]]),  # larger than a batch: alone
        ([(1, 50), (2, 50), (3, 1)], 10, 100, [[1, 2], [3]]),
        ([], 10, 100, []),
    ],
)
def test_body_batches(
    sizes: list[tuple[int, int]], count: int, max_bytes: int, expected: list[list[int]]
) -> None:
    assert list(syncplan.body_batches(sizes, max_count=count, max_bytes=max_bytes)) == expected


def test_chunks() -> None:
    assert list(syncplan.chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(syncplan.chunks([], 2)) == []


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(0, 0.0, 0.5), (0, 1.0, 1.0), (3, 1.0, 8.0), (3, 0.5, 6.0), (20, 1.0, 300.0), (-1, 1.0, 1.0)],
)
def test_backoff_delay(attempt: int, jitter: float, expected: float) -> None:
    assert syncplan.backoff_delay(attempt, jitter) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("state", "failures", "expected"),
    [
        ("ok", 0, 300.0),
        ("failed", 0, 5.0),
        ("failed", 10, 300.0),  # capped at the poll interval
        ("auth_failed", 0, 3600.0),  # never hammer a server that refused the password
        ("auth_failed", 5, 6 * 3600.0),
    ],
)
def test_inbox_retry_delay(state: str, failures: int, expected: float) -> None:
    assert syncplan.inbox_retry_delay(state, failures, 1.0, poll_interval=300.0) == expected


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(0, []), (60, [60.0]), (540, [540.0]), (1200, [540.0, 540.0, 120.0])],
)
def test_idle_slices_reissue_before_ten_minutes(timeout: float, expected: list[float]) -> None:
    assert syncplan.idle_slices(timeout) == expected


def test_count_outcomes() -> None:
    counts = syncplan.count_outcomes(["logged", "duplicate", "skipped", "quarantined", "logged"])
    assert counts == {"logged": 2, "duplicates": 1, "skipped": 1, "quarantined": 1}


@pytest.mark.parametrize(
    ("sizes", "alone_above", "expected"),
    [
        ([(1, 10), (2, 500), (3, 10), (4, 10)], 100, [[1], [2], [3, 4]]),
        ([(1, 500), (2, 600)], 100, [[1], [2]]),
        ([(1, 10), (2, 500)], None, [[1, 2]]),
    ],
)
def test_body_batches_large_mail_travels_alone(
    sizes: list[tuple[int, int]], alone_above: int | None, expected: list[list[int]]
) -> None:
    batches = syncplan.body_batches(sizes, max_count=10, max_bytes=1000, alone_above=alone_above)
    assert list(batches) == expected


def test_a_uid_that_stops_every_pass_is_given_up() -> None:
    """Each pass that stops at the same UID counts once (however often it says so); after
    MAX_STUCK_PASSES the next pass gives it up; passing it, or another UID, resets."""
    checkpoint = FolderCheckpoint("ada", "INBOX", 7, 4, None, True, NOW)
    for passes in range(1, syncplan.MAX_STUCK_PASSES + 1):
        plan = syncplan.plan_folder(
            checkpoint, FolderStatus(7, 20), inbox="ada", folder="INBOX", from_="1y",
            people="all", now=NOW,
        )  # fmt: skip
        assert not plan.gives_up(5)
        checkpoint = plan.checkpoint_before(5)
        assert checkpoint == plan.checkpoint_before(5)  # said twice in a pass: counted once
        assert (checkpoint.last_uid, checkpoint.stuck_uid, checkpoint.stuck_passes) == (
            4, 5, passes,
        )  # fmt: skip
    plan = syncplan.plan_folder(
        checkpoint, FolderStatus(7, 20), inbox="ada", folder="INBOX", from_="1y",
        people="all", now=NOW,
    )  # fmt: skip
    assert plan.gives_up(5) and not plan.gives_up(6)
    assert plan.checkpoint_before(6).stuck_passes == 1
    past = plan.checkpoint_after([5], last=False)
    assert (past.last_uid, past.stuck_uid, past.stuck_passes) == (5, 0, 0)
    below = syncplan.plan_folder(
        FolderCheckpoint("ada", "INBOX", 7, 1, None, True, NOW, 5, 2), FolderStatus(7, 20),
        inbox="ada", folder="INBOX", from_="1y", people="all", now=NOW,
    ).checkpoint_after([2, 3], last=False)  # fmt: skip
    assert (below.last_uid, below.stuck_uid, below.stuck_passes) == (3, 5, 2)
