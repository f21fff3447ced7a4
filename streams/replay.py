"""A tenant's retained history through the core again, in memory: what ``lienthong whatif`` compares.

The same decisions the worker makes (``decide`` for a record, ``decide_for_order`` for an accounting
order, contract, sales voucher or receipt through its order's aggregate), over the worker's own
state (``PartitionState``) held in a dict, from an empty state, with the settings given instead of
the ones on ``config.tenants``. Nothing is sent, written or called: the decisions are returned.

The inputs are replayed in the order they reached Kafka (their timestamps), change events and
results alike: that order is what the worker's holding of absence-dependent changes restores
(docs/state.md), so the replay needs no holding of its own. A result teaches the target's id (X-3)
as it did live; a change event that is bad input is counted, not decided.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from common.messages import Retained
from common.names import System, parse_cdc_topic, results_topic
from streams.agents.changes import decide_change, forget_unwritten, link_from_result
from streams.core.contract import ChangeEvent, Result, decode_change_event
from streams.core.decide import Decision
from streams.core.errors import BadInput
from streams.core.rules import RuleBook
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings
from streams.core.whatif import WhatIfReport
from streams.tables.state import PartitionState
from streams.tables.store import MemoryPartitionStore


@dataclass(slots=True)
class Replayed:
    """What one change event was decided to do in a replay."""

    event: ChangeEvent
    decisions: list[Decision]


@dataclass(slots=True)
class ReplayCounts:
    events: int = 0
    decided: int = 0
    duplicates: int = 0
    bad_input: int = 0
    results: int = 0
    bad_input_reasons: dict[str, int] = field(default_factory=dict)


def read(message: Retained, prefix: str = "") -> ChangeEvent | Result | BadInput | None:
    """A retained message as the worker reads it: a change event (or the bad input it is), a result, or
    None for a tombstone, a result the worker dead-lettered or a topic of neither kind."""
    if message.value is None:
        return None
    names = parse_cdc_topic(message.topic, prefix)
    if names is None:
        if message.topic not in {prefix + results_topic(system) for system in System}:
            return None
        try:
            return Result.model_validate(orjson.loads(message.value))
        except (orjson.JSONDecodeError, ValidationError, TypeError):
            return None  # the worker dead-lettered it: it taught nothing
    try:
        return decode_change_event(
            message.value,
            topic_system=names[0],
            topic_entity=names[1],
            headers=dict(message.headers),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
        )
    except BadInput as bad:
        return bad


class OneTenantSettings:
    """The settings a replay decides with: the given ones for every tenant it meets (it meets one)."""

    def __init__(self, settings: SyncSettings) -> None:
        self.settings = settings

    def get(self, tenant: str) -> SyncSettings:
        return self.settings


def decide_and_remember(state: PartitionState, change: ChangeEvent, rules: RuleBook, now_ms: int) -> list[Decision]:
    """One change event's decisions as the worker decides them (``decide_change``), remembered in ``state``
    at once; ``[]`` for a duplicate. Raises ``BadInput``."""
    decided = decide_change(state, change, rules, now_ms)
    if decided is None:
        return []
    decided.remember()
    return decided.decisions


class Replay:
    """Decides retained inputs one by one, in the order given, with ``settings``."""

    def __init__(
        self,
        rules: RuleBook,
        settings: SyncSettings = DEFAULT_SETTINGS,
        *,
        default_order_target: str = "sale_order",
        topic_prefix: str = "",
        flush_every: int = 1000,
    ) -> None:
        self.rules = rules
        self.prefix = topic_prefix
        self.state = PartitionState(MemoryPartitionStore(0), OneTenantSettings(settings), default_order_target)
        self.counts = ReplayCounts()
        self.flush_every = flush_every

    def feed(self, message: Retained) -> Replayed | None:
        """Decide one retained message; the decisions of a change event, None for anything else."""
        return self.apply(read(message, self.prefix))

    def apply(self, item: ChangeEvent | Result | BadInput | None) -> Replayed | None:
        """Decide what ``read`` made of one message (read once, it can be applied to several replays)."""
        if item is None:
            return None
        if isinstance(item, Result):
            self.counts.results += 1
            link = link_from_result(item)
            if link is not None:
                self.state.apply_links([link])
            forget_unwritten(self.state, item)
            return None
        self.counts.events += 1
        try:
            if isinstance(item, BadInput):
                raise item
            decisions = decide_and_remember(self.state, item, self.rules, now_ms=item.ts_ms)
        except BadInput as bad:
            self.counts.bad_input += 1
            self.counts.bad_input_reasons[bad.kind] = self.counts.bad_input_reasons.get(bad.kind, 0) + 1
            return None
        if not decisions:
            self.counts.duplicates += 1
            return None
        self.counts.decided += 1
        if self.counts.decided % self.flush_every == 0:
            self.state.write_to_store(None)  # as the loop does once a batch is committed
        return Replayed(item, decisions)

    def run(self, messages: Iterable[Retained]) -> Iterator[Replayed]:
        for message in messages:
            replayed = self.feed(message)
            if replayed is not None:
                yield replayed


def whatif(
    messages: Iterable[Retained],
    *,
    rules_in_force: RuleBook,
    settings_in_force: SyncSettings,
    rules_proposed: RuleBook,
    settings_proposed: SyncSettings,
    default_order_target: str = "sale_order",
    topic_prefix: str = "",
    examples_per_rule: int = 3,
    progress: Callable[[int], None] | None = None,
) -> tuple[WhatIfReport, ReplayCounts]:
    """Replay ``messages`` twice, side by side from an empty state — with the rules and settings in force and
    with the proposed ones — and compare each change event's commands."""
    in_force = Replay(
        rules_in_force, settings_in_force, default_order_target=default_order_target, topic_prefix=topic_prefix
    )
    proposed = Replay(
        rules_proposed, settings_proposed, default_order_target=default_order_target, topic_prefix=topic_prefix
    )
    report = WhatIfReport(examples_per_rule=examples_per_rule)
    for n, message in enumerate(messages, start=1):
        item = read(message, topic_prefix)  # decoded once for both
        old, new = in_force.apply(item), proposed.apply(item)
        first = old if old is not None else new
        if first is not None:
            report.add_event(
                first.event,
                first.decisions[0].audit.action,
                [c for d in (old.decisions if old else ()) for c in d.commands],
                [c for d in (new.decisions if new else ()) for c in d.commands],
            )
        if progress is not None and n % 1000 == 0:
            progress(n)
    return report, in_force.counts
