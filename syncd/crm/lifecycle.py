"""Lifecycle stages, deal and ticket pipelines, and what a deal's stage does to its contacts.

Lifecycle stages of contacts and companies only move forward::

    subscriber -> lead -> marketingqualifiedlead -> salesqualifiedlead
               -> opportunity -> customer -> evangelist -> other

A cleared stage ('' or None) accepts any stage; that is the only way back. Stages
proposed by the CRM (an import, a deal's effects) that would move a record back are
ignored (``advance``); a stage a person sets by hand that would is refused
(``set_stage`` raises ``StageBackward``) unless they clear it in the same breath.

Deals move through a pipeline of open stages, then to one won or one lost stage; tickets
through open statuses to one closed status. Both pipelines can be replaced from the
config's ``pipelines:``. Deal effects on records::

    deal created with contacts    -> contacts become opportunity
    deal moved to the won stage   -> its contacts and their companies become customer
    deal moved to the lost stage  -> nothing changes

Pure: values in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STAGES: tuple[str, ...] = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
_RANK = {stage: rank for rank, stage in enumerate(STAGES)}


class StageError(ValueError):
    """A stage, status or pipeline name that is not known; ``str`` says which are."""


def check_stage(stage: str) -> str:
    """Return ``stage`` if it is a lifecycle stage, else raise StageError."""
    if stage not in _RANK:
        raise StageError(f"unknown lifecycle stage {stage!r}; known: {', '.join(STAGES)}")
    return stage


def advance(current: str | None, proposed: str) -> str:
    """The stage after proposing ``proposed`` to a record at ``current``: forward only."""
    check_stage(proposed)
    if not current:
        return proposed
    if current not in _RANK:
        # A stage written by hand into the store: keep it rather than guess.
        return current
    return proposed if _RANK[proposed] > _RANK[current] else current


class StageBackward(ValueError):
    """A stage set by hand that would move a record back; ``str`` says how to do it."""


def set_stage(current: str | None, proposed: str | None, *, clear: bool = False) -> str | None:
    """The stage after a person sets it: ``clear`` empties it first, then ``proposed``
    (None: none given) must be ``current`` or later. A stage written into the store by
    hand (not one of ``STAGES``) has no place in the order, so anything may follow it.
    StageError for an unknown ``proposed``, StageBackward for a move back."""
    if proposed is not None:
        check_stage(proposed)
    if clear:
        current = None
    if proposed is None:
        return current
    if current and current in _RANK and _RANK[proposed] < _RANK[current]:
        raise StageBackward(
            f"lifecycle stages move forward only ({current} to {proposed}); clear the stage first"
        )
    return proposed


@dataclass(frozen=True, slots=True)
class DealPipeline:
    """Open stages in order, then one won and one lost stage."""

    open: tuple[str, ...]
    won: str
    lost: str

    def __post_init__(self) -> None:
        names = [*self.open, self.won, self.lost]
        if not self.open or len(set(names)) != len(names) or not all(names):
            raise StageError(f"deal pipeline needs distinct, non-empty stages: {names}")

    @property
    def stages(self) -> tuple[str, ...]:
        return (*self.open, self.won, self.lost)

    def check(self, stage: str) -> str:
        if stage not in self.stages:
            raise StageError(f"unknown deal stage {stage!r}; known: {', '.join(self.stages)}")
        return stage

    def state(self, stage: str) -> str:
        """'open', 'won' or 'lost' for a known stage."""
        self.check(stage)
        if stage == self.won:
            return "won"
        return "lost" if stage == self.lost else "open"


@dataclass(frozen=True, slots=True)
class TicketPipeline:
    """Open statuses in order, then one closed status."""

    open: tuple[str, ...]
    closed: str

    def __post_init__(self) -> None:
        names = [*self.open, self.closed]
        if not self.open or len(set(names)) != len(names) or not all(names):
            raise StageError(f"ticket pipeline needs distinct, non-empty statuses: {names}")

    @property
    def statuses(self) -> tuple[str, ...]:
        return (*self.open, self.closed)

    def check(self, status: str) -> str:
        if status not in self.statuses:
            known = ", ".join(self.statuses)
            raise StageError(f"unknown ticket status {status!r}; known: {known}")
        return status

    def state(self, status: str) -> str:
        """'open' or 'closed' for a known status."""
        self.check(status)
        return "closed" if status == self.closed else "open"


DEFAULT_DEALS = DealPipeline(
    open=(
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "decisionmakerboughtin",
        "contractsent",
    ),
    won="closedwon",
    lost="closedlost",
)
DEFAULT_TICKETS = TicketPipeline(open=("new", "waiting"), closed="closed")


@dataclass(frozen=True, slots=True)
class Pipelines:
    """The deal and ticket pipelines in force."""

    deals: DealPipeline = DEFAULT_DEALS
    tickets: TicketPipeline = DEFAULT_TICKETS

    @classmethod
    def from_config(cls, pipelines: Any | None) -> Pipelines:
        """Build from ``config.pipelines`` (None or missing parts keep the defaults)."""
        if pipelines is None:
            return cls()
        deals = _get(pipelines, "deals")
        tickets = _get(pipelines, "tickets")
        return cls(
            deals=DealPipeline(
                open=_stage_list(_get(deals, "open")),
                won=str(_get(deals, "won")),
                lost=str(_get(deals, "lost")),
            )
            if deals is not None
            else DEFAULT_DEALS,
            tickets=TicketPipeline(
                open=_stage_list(_get(tickets, "open")), closed=str(_get(tickets, "closed"))
            )
            if tickets is not None
            else DEFAULT_TICKETS,
        )


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _stage_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@dataclass(frozen=True, slots=True)
class DealEffect:
    """Lifecycle stages to propose to a deal's contacts and companies (None: no change)."""

    contacts: str | None = None
    companies: str | None = None


def deal_effect(pipeline: DealPipeline, old_stage: str | None, new_stage: str) -> DealEffect:
    """What moving a deal from ``old_stage`` (None: just created) to ``new_stage`` does."""
    state = pipeline.state(new_stage)
    if state == "won" and old_stage != new_stage:
        return DealEffect(contacts="customer", companies="customer")
    if old_stage is None and state == "open":
        return DealEffect(contacts="opportunity")
    return DealEffect()
