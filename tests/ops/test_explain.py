"""``explain``'s search (``ops.explain.find``), pure: a record is found by its business code or by
either system's id, and each command shows what became of it on ``results.*``."""

from __future__ import annotations

from typing import Any

from ops.explain import find
from ops.history import Message, build, format_history

T = "cty-demo"


def audit(system: str, entity: str, record_id: str, ts: int, *commands: dict[str, Any], **extra: Any) -> dict:
    return {
        "schema_version": 1,
        "tenant": T,
        "system": system,
        "entity": entity,
        "record_id": record_id,
        "event_id": f"e{ts}",
        "action": extra.pop("action", "create"),
        "origin": extra.pop("origin", "user"),
        "rule": extra.get("rules", [None])[0] if extra.get("rules") else None,
        "rules": extra.pop("rules", []),
        "commands": list(commands),
        "reason": extra.pop("reason", None),
        "notes": [],
        "ts_ms": ts,
    }


def command(command_id: str, rule: str, target: str, entity: str, op: str, key: str) -> dict:
    return {"command_id": command_id, "rule": rule, "target": target, "entity": entity, "op": op, "key": key}


def result(command_id: str, target: str, entity: str, status: str, target_id: str | None = None, **extra: Any) -> dict:
    return {
        "command_id": command_id,
        "tenant": T,
        "target": target,
        "entity": entity,
        "status": status,
        "target_id": target_id,
        "code": extra.pop("code", None),
        "error": extra.pop("error", None),
        "attempts": extra.pop("attempts", 1),
        "ts_ms": extra.pop("ts_ms", 0),
    }


# the demo's customer: created in accounting (UUID), CUS-6 creates it in CRM (crm id 17), edited in
# CRM, the echo of the CRM write, and another customer that must not be mixed in
AUDITS = [
    audit(
        "acct",
        "customer",
        "a-uuid-1",
        1,
        command("c1", "CUS-6", "crm", "customer", "create", "KH0001"),
        rules=["CUS-6"],
    ),
    audit("crm", "customer", "17", 2, rules=["CUS-2", "X-1"], origin="sync", reason="X-1: written by this integration"),
    audit(
        "crm",
        "customer",
        "17",
        3,
        command("c2", "CUS-3", "acct", "customer", "update", "KH0001"),
        rules=["CUS-3"],
        action="update",
    ),
    audit(
        "acct",
        "customer",
        "a-uuid-2",
        4,
        command("c3", "CUS-6", "crm", "customer", "create", "KH0002"),
        rules=["CUS-6"],
    ),
]
RESULTS = [
    result("c1", "crm", "customer", "applied", "17", code="KH0001"),
    result("c2", "acct", "customer", "rejected", error={"kind": "http_401", "message": "the token was refused"}),
    result("c3", "crm", "customer", "applied", "18", code="KH0002", attempts=3),
]


def test_the_business_code_the_demo_prints_finds_the_whole_trail_of_both_systems() -> None:
    found = find(T, "customer", "KH0001", AUDITS, RESULTS)
    assert found.records == [("acct", "a-uuid-1"), ("crm", "17")]
    assert [c.audit["ts_ms"] for c in found.changes] == [1, 2, 3]
    assert set(found.identifiers) == {"KH0001", "a-uuid-1", "17"}


def test_either_systems_id_finds_the_same_record() -> None:
    by_code = find(T, "customer", "KH0001", AUDITS, RESULTS)
    assert find(T, "customer", "17", AUDITS, RESULTS).records == by_code.records
    assert find(T, "customer", "a-uuid-1", AUDITS, RESULTS).records == by_code.records


def test_each_command_shows_what_became_of_it() -> None:
    outcomes = [o for c in find(T, "customer", "KH0001", AUDITS, RESULTS).changes for o in c.outcomes]
    assert [(o.command["rule"], o.status, o.error, o.target_id) for o in outcomes] == [
        ("CUS-6", "applied", None, "17"),
        ("CUS-3", "rejected", "http_401: the token was refused", None),
    ]
    retried = find(T, "customer", "KH0002", AUDITS, RESULTS).changes[0].outcomes[0]
    assert (retried.status, retried.attempts, retried.retried) == ("applied", 3, True)
    messages = [Message("audit.sync", 0, n, 0, a) for n, a in enumerate(AUDITS)]
    messages += [Message(f"results.{r['target']}", 0, n, 0, r) for n, r in enumerate(RESULTS)]
    text = "\n".join(format_history(build(T, "customer", "KH0001", messages)))
    assert "rejected: http_401: the token was refused" in text and "applied (id 17)" in text


def test_a_command_without_a_result_is_pending_and_a_replayed_one_retried() -> None:
    audits = [audit("crm", "sale_order", "o-9", 1, command("s1", "SO-1", "acct", "sale_order", "create", "DH0001"))]
    assert find(T, "sale_order", "DH0001", audits, []).changes[0].outcomes[0].status == "pending"
    twice = [
        result("s1", "acct", "sale_order", "failed", error={"kind": "retries_exhausted", "message": "503"}),
        result("s1", "acct", "sale_order", "applied", "AO17"),
    ]
    outcome = find(T, "sale_order", "o-9", audits, twice).changes[0].outcomes[0]
    assert (outcome.status, outcome.target_id, outcome.retried) == ("applied", "AO17", True)


def test_an_order_shows_the_derived_updates_a_voucher_sent_it() -> None:
    audits = [
        audit("crm", "sale_order", "o-9", 1, command("s1", "SO-1", "acct", "sale_order", "create", "DH0001")),
        audit(
            "acct",
            "sales_voucher",
            "v-1",
            2,
            command("d1", "SO-9", "crm", "sale_order", "update", "DH0001"),
            command("d2", "SO-9", "crm", "sale_order", "update", "DH0002"),
        ),
    ]
    found = find(T, "sale_order", "DH0001", audits, [])
    assert [(c.via, [o.command["command_id"] for o in c.outcomes]) for c in found.changes] == [
        (None, ["s1"]),
        ("sales_voucher", ["d1"]),
    ]
    assert found.records == [("crm", "o-9")]


def test_an_unknown_code_or_another_entity_finds_nothing() -> None:
    assert find(T, "customer", "KH9999", AUDITS, RESULTS).changes == []
    assert find(T, "product", "KH0001", AUDITS, RESULTS).changes == []
    assert find("other-tenant", "customer", "KH0001", AUDITS, RESULTS).changes == []
