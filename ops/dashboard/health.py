"""What the operator's page knows from the topics: sync health per record, dead letters, latency.

Pure: fed one message at a time (``SyncHealth.audit`` / ``result`` / ``dead_letter``) by the
collector's tail of ``audit.sync``, ``results.*`` and ``dlq.*``; read by the page. No Kafka here.

A record's state comes from its latest audit record that sent commands (docs/contract.md, "Audit
record"): **failing** when one of those commands came back ``rejected`` or ``failed`` (or when the
record's change was dead-lettered after it), **pending** while one of them has no result yet,
**in sync** otherwise (also when no change of it had anything to send).
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from common.names import DLQ_CDC, DLQ_COMMANDS, ERROR_KIND, ERROR_MESSAGE, FAILED_AT_MS, ORIGIN_TOPIC, parse_cdc_topic

SyncStatus = Literal["in sync", "pending", "failing"]
SYNC_STATUSES: tuple[SyncStatus, ...] = ("in sync", "pending", "failing")
FAILED = {"rejected", "failed"}
DONE = {"applied", "duplicate"}


@dataclass
class CommandState:
    target: str
    decided_ms: int
    status: str | None = None  # None: no result yet
    error: str | None = None
    error_kind: str | None = None  # the result's error.kind: the reason its dead letter on dlq.commands carries
    finished_ms: int = 0


@dataclass
class RecordState:
    tenant: str
    entity: str
    record_id: str
    system: str
    code: str | None = None  # its business code: the key of a command its changes sent for its own entity
    last_change_ms: int = 0
    commands: list[str] = field(default_factory=list)  # of the latest audit record that sent some
    dead_letter: str | None = None  # a change of it that was dead-lettered after that audit record
    dead_letter_kind: str | None = None
    dead_letter_ms: int = 0


@dataclass(frozen=True)
class DeadLetterView:
    topic: str
    reason: str
    key: str
    message: str
    origin: str
    failed_at_ms: int


@dataclass(frozen=True)
class RecordView:
    tenant: str
    entity: str
    record_id: str
    system: str
    status: SyncStatus
    last_error: str | None
    last_change_ms: int
    code: str | None = None  # the business code, when a command named it (None: only the id is known)
    # where the dead letter of a failing record is, to replay it once the cause is fixed: (topic, error.kind)
    dead_letter: tuple[str, str] | None = None

    @property
    def title(self) -> str:
        """How a person names the record: its business code, else its id."""
        return self.code or self.record_id


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


class LatencyWindow:
    """The latest ``size`` latencies (seconds) per target; percentiles over them."""

    def __init__(self, size: int = 5000) -> None:
        self.size = size
        self._recent: dict[str, deque[float]] = {}

    def add(self, target: str, seconds: float) -> None:
        self._recent.setdefault(target, deque(maxlen=self.size)).append(max(0.0, seconds))

    def percentiles(self, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, dict[str, float]]:
        """target -> {"p50": s, "p90": s, "p99": s, "count": n} (nearest rank)."""
        out: dict[str, dict[str, float]] = {}
        for target, values in sorted(self._recent.items()):
            ordered = sorted(values)
            if not ordered:
                continue
            row = {
                f"p{round(q * 100)}": ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]
                for q in quantiles
            }
            row["count"] = float(len(ordered))
            out[target] = row
        return out


class SyncHealth:
    """Sync health per tenant, entity and record; dead letters by reason; decided → applied latency.

    Memory: one small entry per record and per command seen; ``max_letters`` dead letters kept whole
    (counts are kept for all).
    """

    def __init__(self, max_letters: int = 200) -> None:
        self.records: dict[tuple[str, str, str], RecordState] = {}
        self.commands: dict[str, CommandState] = {}
        self.letter_counts: Counter[tuple[str, str]] = Counter()
        self.letters: deque[DeadLetterView] = deque(maxlen=max_letters)
        self.latency = LatencyWindow()
        self.results_by_status: Counter[tuple[str, str]] = Counter()

    # --- feeding -------------------------------------------------------------------------------------

    def audit(self, value: dict[str, Any]) -> None:
        """One audit record of ``audit.sync``."""
        key = (str(value.get("tenant", "")), str(value.get("entity", "")), str(value.get("record_id", "")))
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = RecordState(*key, system=str(value.get("system", "")))
        ts = int(value.get("ts_ms") or 0)
        record.last_change_ms = max(record.last_change_ms, ts)
        commands = value.get("commands") or []
        if commands:
            record.commands = [str(c["command_id"]) for c in commands if c.get("command_id")]
            record.dead_letter = record.dead_letter_kind = None
            own = [str(c["key"]) for c in commands if c.get("entity") == record.entity and c.get("key")]
            record.code = own[0] if own else record.code
            for command in commands:
                command_id = str(command.get("command_id", ""))
                if command_id and command_id not in self.commands:
                    self.commands[command_id] = CommandState(target=str(command.get("target", "")), decided_ms=ts)

    def result(self, value: dict[str, Any]) -> None:
        """One result of ``results.<target>``."""
        command_id = str(value.get("command_id", ""))
        status = str(value.get("status", ""))
        target = str(value.get("target", ""))
        self.results_by_status[(target, status)] += 1
        command = self.commands.get(command_id)
        if command is None:  # a result before its audit record (another partition): remember it
            command = self.commands[command_id] = CommandState(target=target, decided_ms=0)
        error = value.get("error") or None
        command.status, command.finished_ms = status, int(value.get("ts_ms") or 0)
        command.error = f"{error.get('kind', '?')}: {error.get('message', '')}" if isinstance(error, dict) else None
        command.error_kind = (str(error.get("kind") or "") or None) if isinstance(error, dict) else None
        if status in DONE and command.decided_ms and command.finished_ms:
            self.latency.add(target, (command.finished_ms - command.decided_ms) / 1000)

    def dead_letter(self, topic: str, key: bytes | None, headers: list[tuple[str, Any]]) -> None:
        """One message of ``dlq.cdc`` / ``dlq.commands`` (``topic`` without the deployment prefix)."""
        named = {name: _text(raw) for name, raw in headers}
        letter = DeadLetterView(
            topic=topic,
            reason=named.get(ERROR_KIND, "unknown"),
            key=_text(key),
            message=named.get(ERROR_MESSAGE, ""),
            origin=named.get(ORIGIN_TOPIC, ""),
            failed_at_ms=int(named.get(FAILED_AT_MS) or 0),
        )
        self.letter_counts[(topic, letter.reason)] += 1
        self.letters.append(letter)
        # a change event dead-lettered: its origin topic (the deployment's prefix, then cdc.<system>.<entity>)
        # names the entity, the key <tenant>:<record id>
        names = parse_cdc_topic(".".join(letter.origin.split(".")[-3:]))
        tenant, _, record_id = letter.key.partition(":")
        if topic == DLQ_CDC and names is not None and record_id:
            system, entity = names
            key_ = (tenant, entity, record_id)
            record = self.records.get(key_)
            if record is None:
                record = self.records[key_] = RecordState(*key_, system=system)
            record.dead_letter = f"dead-lettered on {topic}: {letter.reason}: {letter.message}"
            record.dead_letter_kind = letter.reason
            record.dead_letter_ms = letter.failed_at_ms
            record.last_change_ms = max(record.last_change_ms, letter.failed_at_ms)

    # --- reading -------------------------------------------------------------------------------------

    def view(self, record: RecordState) -> RecordView:
        status: SyncStatus = "in sync"
        error: str | None = None
        letter: tuple[str, str] | None = None
        for command_id in record.commands:
            command = self.commands.get(command_id)
            if command is None or command.status is None or command.status == "pending":
                status = "pending" if status != "failing" else status
            elif command.status in FAILED:
                status, error = "failing", command.error or f"command {command_id[:12]} {command.status}"
                letter = (DLQ_COMMANDS, command.error_kind or command.status)
        if record.dead_letter:
            status, error = "failing", record.dead_letter
            letter = (DLQ_CDC, record.dead_letter_kind or "unknown")
        return RecordView(
            record.tenant,
            record.entity,
            record.record_id,
            record.system,
            status,
            error,
            record.last_change_ms,
            code=record.code,
            dead_letter=letter,
        )

    def count(self, status: SyncStatus) -> int:
        """How many records are in ``status``, over every tenant and entity."""
        return sum(1 for record in self.records.values() if self.view(record).status == status)

    def by_tenant_entity(self) -> dict[tuple[str, str], dict[SyncStatus, int]]:
        """(tenant, entity) -> records in sync / pending / failing."""
        table: dict[tuple[str, str], dict[SyncStatus, int]] = {}
        for record in self.records.values():
            row = table.setdefault((record.tenant, record.entity), dict.fromkeys(SYNC_STATUSES, 0))
            row[self.view(record).status] += 1
        return dict(sorted(table.items()))

    def not_in_sync(self, limit: int = 100) -> list[RecordView]:
        """Failing records first, then pending ones, latest change first."""
        views = [v for v in (self.view(r) for r in self.records.values()) if v.status != "in sync"]
        views.sort(key=lambda v: (v.status != "failing", -v.last_change_ms))
        return views[:limit]

    def command(self, command_id: str) -> CommandState | None:
        return self.commands.get(command_id)


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` are (upper bound, cumulative count), +Inf last."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    counts = [count for _, count in buckets]
    index = min(bisect.bisect_left(counts, rank), len(buckets) - 1)
    upper, count = buckets[index]
    if upper == float("inf"):
        return buckets[index - 1][0] if index > 0 else None
    lower, below = (buckets[index - 1][0], buckets[index - 1][1]) if index > 0 else (0.0, 0.0)
    if count == below:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below)
