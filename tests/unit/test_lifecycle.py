"""Lifecycle stage order, pipelines (default and from config), and deal stage effects."""

from __future__ import annotations

import pytest

from syncd.crm.lifecycle import (
    DEFAULT_DEALS,
    STAGES,
    DealEffect,
    DealPipeline,
    Pipelines,
    StageBackward,
    StageError,
    TicketPipeline,
    advance,
    deal_effect,
    set_stage,
)


def test_stage_order() -> None:
    assert STAGES == (
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    )


@pytest.mark.parametrize(
    ("current", "proposed", "result"),
    [
        ("lead", "opportunity", "opportunity"),
        ("subscriber", "lead", "lead"),
        ("customer", "opportunity", "customer"),  # never backwards
        ("customer", "lead", "customer"),
        ("opportunity", "opportunity", "opportunity"),
        ("evangelist", "other", "other"),
        (None, "customer", "customer"),  # a cleared stage accepts anything
        ("", "subscriber", "subscriber"),
        ("handwritten", "lead", "handwritten"),  # unknown stored stage is kept
    ],
)
def test_advance_forward_only(current: str | None, proposed: str, result: str) -> None:
    assert advance(current, proposed) == result


@pytest.mark.parametrize("bad", ["Lead", "prospect", ""])
def test_unknown_stage_rejected(bad: str) -> None:
    with pytest.raises(StageError, match="unknown lifecycle stage"):
        advance("lead", bad)


def test_default_pipelines() -> None:
    pipelines = Pipelines()
    assert pipelines.deals.stages == (
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "decisionmakerboughtin",
        "contractsent",
        "closedwon",
        "closedlost",
    )
    assert pipelines.tickets.statuses == ("new", "waiting", "closed")
    assert pipelines.tickets.state("waiting") == "open"
    assert pipelines.tickets.state("closed") == "closed"


def test_pipelines_from_config_shapes() -> None:
    custom = Pipelines.from_config(
        {
            "deals": {"open": ["talk", "offer"], "won": "signed", "lost": "gone"},
            "tickets": {"open": ["todo"], "closed": "done"},
        }
    )
    assert custom.deals.stages == ("talk", "offer", "signed", "gone")
    assert custom.deals.state("signed") == "won"
    assert custom.tickets.statuses == ("todo", "done")
    assert Pipelines.from_config(None) == Pipelines()


@pytest.mark.parametrize(
    "make",
    [
        lambda: DealPipeline(open=(), won="w", lost="l"),
        lambda: DealPipeline(open=("a",), won="a", lost="l"),
        lambda: TicketPipeline(open=("new",), closed="new"),
    ],
)
def test_bad_pipelines_rejected(make: object) -> None:
    with pytest.raises(StageError):
        make()  # type: ignore[operator]


def test_unknown_deal_stage_and_ticket_status_rejected() -> None:
    with pytest.raises(StageError, match="unknown deal stage 'won'"):
        DEFAULT_DEALS.check("won")
    with pytest.raises(StageError, match="unknown ticket status 'open'"):
        Pipelines().tickets.check("open")


@pytest.mark.parametrize(
    ("old", "new", "effect"),
    [
        (None, "appointmentscheduled", DealEffect(contacts="opportunity")),
        (None, "contractsent", DealEffect(contacts="opportunity")),
        (None, "closedwon", DealEffect(contacts="customer", companies="customer")),
        (None, "closedlost", DealEffect()),
        ("qualifiedtobuy", "closedwon", DealEffect(contacts="customer", companies="customer")),
        ("qualifiedtobuy", "closedlost", DealEffect()),
        ("qualifiedtobuy", "contractsent", DealEffect()),
        ("closedwon", "closedwon", DealEffect()),
    ],
)
def test_deal_effects(old: str | None, new: str, effect: DealEffect) -> None:
    assert deal_effect(DEFAULT_DEALS, old, new) == effect


@pytest.mark.parametrize(
    ("current", "proposed", "clear", "result"),
    [
        ("lead", "customer", False, "customer"),  # forward
        ("lead", "lead", False, "lead"),  # the same stage again
        (None, "subscriber", False, "subscriber"),  # nothing set: anything goes
        ("", "other", False, "other"),
        ("customer", "lead", True, "lead"),  # back, cleared in the same breath
        ("customer", None, True, None),  # cleared only
        ("customer", None, False, "customer"),  # nothing asked
        ("handmade", "subscriber", False, "subscriber"),  # a stage written by hand: no order
        ("evangelist", "other", False, "other"),
    ],
)
def test_set_stage_by_hand(
    current: str | None, proposed: str | None, clear: bool, result: str | None
) -> None:
    assert set_stage(current, proposed, clear=clear) == result


@pytest.mark.parametrize(
    ("current", "proposed"),
    [("customer", "lead"), ("other", "subscriber"), ("lead", "subscriber")],
)
def test_set_stage_refuses_a_move_back(current: str, proposed: str) -> None:
    with pytest.raises(StageBackward) as caught:
        set_stage(current, proposed)
    assert str(caught.value) == (
        f"lifecycle stages move forward only ({current} to {proposed}); clear the stage first"
    )


@pytest.mark.parametrize("clear", [False, True])
def test_set_stage_refuses_an_unknown_stage_even_when_clearing(clear: bool) -> None:
    with pytest.raises(StageError, match="unknown lifecycle stage 'won'"):
        set_stage("lead", "won", clear=clear)
