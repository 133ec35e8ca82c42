"""The source contract, table by table: batches handed over in order with their record,
outcomes back per batch; file import batches; the fetcher's pass settings and the BCC
provenance a source builds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from syncd.crm.model import Outcome
from syncd.mail.provenance import Provenance
from syncd.sources import bcc
from syncd.sources.base import Handover, Item, hand_over
from syncd.sources.files import handovers
from syncd.sources.imap.fetch import Limits, PassSettings

NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[bytes], object]] = []

    def __call__(self, items: list[Item], record: object, /) -> Sequence[Outcome]:
        self.calls.append(([raw for raw, _ in items], record))
        return [Outcome("logged", raw.decode()) for raw, _ in items]


@pytest.mark.parametrize(
    ("batches", "calls"),
    [
        ([], []),
        ([([b"a"], 1)], [([b"a"], 1)]),
        ([([b"a", b"b"], (1, 2)), ([], "empty"), ([b"c"], None)],
         [([b"a", b"b"], (1, 2)), ([], "empty"), ([b"c"], None)]),
    ],
)  # fmt: skip
def test_hand_over_delivers_each_batch_with_its_record_in_order(
    batches: list[tuple[list[bytes], object]], calls: list[tuple[list[bytes], object]]
) -> None:
    deliver = Recorder()
    given = [Handover([(raw, Provenance("import", NOW)) for raw in raws], r) for raws, r in batches]
    outcomes = list(hand_over(given, deliver))
    assert deliver.calls == calls
    assert [[o.key for o in batch] for batch in outcomes] == [
        [raw.decode() for raw in raws] for raws, _ in calls
    ]


def test_hand_over_is_lazy_a_batch_is_taken_only_when_the_last_committed() -> None:
    deliver = Recorder()
    delivered = hand_over(iter([Handover([], 1), Handover([], 2)]), deliver)
    assert deliver.calls == []
    next(delivered)
    assert deliver.calls == [([], 1)]


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [(0, 3, []), (1, 3, [1]), (3, 3, [3]), (7, 3, [3, 3, 1]), (2, 1, [1, 1])],
)
def test_file_import_batches(count: int, size: int, sizes: list[int]) -> None:
    messages = [(f"m{i}".encode(), NOW) for i in range(count)]
    batches = list(handovers(messages, "ada@example.com", size))
    assert [len(b.items) for b in batches] == sizes
    assert all(b.record is None for b in batches)
    provenances = [p for b in batches for _, p in b.items]
    assert all(p == Provenance("import", NOW, owner="ada@example.com") for p in provenances)


@pytest.mark.parametrize("owner", [None, "ada@example.com"])
def test_bcc_provenance(owner: str | None) -> None:
    got = bcc.provenance(NOW.timestamp(), "ada@example.com", owner)
    assert got == Provenance("bcc", NOW, owner=owner, sender="ada@example.com")
    assert got.label == "bcc"


@pytest.mark.parametrize(("internal", "partial"), [(NOW, False), (NOW, True), (None, False)])
def test_pass_settings_provenance(internal: datetime | None, partial: bool) -> None:
    settings = PassSettings(
        inbox="ada", owner="ada@example.com", from_="3m", people="all", started=NOW,
        dry_run=False, limits=Limits(), contacts=frozenset(),
    )  # fmt: skip
    got = settings.provenance("INBOX", 7, internal, partial)
    assert (got.source, got.inbox, got.folder, got.uid) == ("imap", "ada", "INBOX", 7)
    assert (got.owner, got.internal_date, got.partial) == ("ada@example.com", internal, partial)
    assert got.received_at == internal if internal else got.received_at.tzinfo is not None
    assert got.label == "imap:ada/INBOX"


@pytest.mark.parametrize("with_record", [True, False])
def test_deliverer_writes_the_record_inside_the_pipelines_commit(with_record: bool) -> None:
    from syncd.services.intake import deliverer

    written: list[tuple[object, object]] = []
    seen: dict[str, object] = {}

    def ingest_batch(items: list[Item], *, on_commit: object = None) -> list[Outcome]:
        seen["on_commit"] = on_commit
        if callable(on_commit):
            on_commit("conn")  # the pipeline runs it inside its transaction
        return [Outcome("logged") for _ in items]

    write = (lambda conn, record: written.append((conn, record))) if with_record else None
    outcomes = deliverer(ingest_batch, write)([(b"x", Provenance("bcc", NOW))], (4, 5))
    assert [o.status for o in outcomes] == ["logged"]
    assert written == ([("conn", (4, 5))] if with_record else [])
    assert (seen["on_commit"] is None) is not with_record
