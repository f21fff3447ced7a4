"""``history``'s story, pure (``ops.history.build``): the versions of a record and of its linked record in
time order with their diffs and who made them, each decision joined to its change and each command to its
result, an order's documents with the derived values they made; what retention deleted is said; and what
the index names each message by (``names_of``)."""

from __future__ import annotations

from typing import Any

from ops.history import Message, build, field_diff, names_of
from ops.retained import Retention

T = "cty-demo"


def event(system: str, entity: str, ts: int, after: dict | None, before: dict | None = None, **extra: Any) -> Message:
    value = {
        "schema_version": 1,
        "event_id": f"e{ts}",
        "tenant": T,
        "system": system,
        "entity": entity,
        "op": extra.pop("op", "u" if before else "c"),
        "origin": extra.pop("origin", "user"),
        "ts_ms": ts,
        "before": before,
        "after": after,
        **extra,
    }
    return Message(f"cdc.{system}.{entity}", 0, ts, ts, value)


def audit(system: str, entity: str, record_id: str, ts: int, rules: list[str], *commands: dict) -> Message:
    value = {
        "schema_version": 1,
        "tenant": T,
        "system": system,
        "entity": entity,
        "record_id": record_id,
        "event_id": f"e{ts}",
        "action": "update",
        "origin": "user",
        "rule": rules[0] if rules else None,
        "rules": rules,
        "commands": list(commands),
        "reason": None,
        "notes": [],
        "settings_revision": 0,
        "ts_ms": ts + 1,
    }
    return Message("audit.sync", 0, ts, ts + 1, value)


def command(command_id: str, rule: str, target: str, key: str, op: str = "update") -> dict:
    return {"command_id": command_id, "rule": rule, "target": target, "entity": "sale_order", "op": op, "key": key}


def result(command_id: str, target: str, status: str, target_id: str | None, ts: int, **extra: Any) -> Message:
    value = {
        "command_id": command_id,
        "tenant": T,
        "target": target,
        "entity": "sale_order",
        "status": status,
        "target_id": target_id,
        "code": "DH1",
        "error": extra.get("error"),
        "attempts": extra.get("attempts", 1),
        "ts_ms": ts,
    }
    return Message(f"results.{target}", 0, ts, ts, value)


ORDER = {"id": "O1", "code": "DH1", "revenue_status": "draft", "total_amount": "1000", "modified_by": "an"}
ACCT = {
    "id": "A1",
    "code": "DH1",
    "crm_id": "O1",
    "revenue_status": "proposed",
    "total_amount": "1000",
    "lines": [{"line_id": "L1", "product_code": "SP1", "quantity": 10, "amount": "1000"}],
}
VOUCHER = {"id": "V1", "code": "XK1", "order_id": "A1", "lines": [{"line_id": "L1", "quantity": 3, "amount": "300"}]}
RECEIPT = {"id": "R1", "code": "PT1", "order_id": "A1", "amount": "400"}

MESSAGES = [
    event("crm", "sale_order", 10, ORDER),
    audit("crm", "sale_order", "O1", 10, ["SO-1"]),
    event("crm", "sale_order", 20, dict(ORDER, revenue_status="proposed"), ORDER),
    audit("crm", "sale_order", "O1", 20, ["SO-4"], command("c-so4", "SO-4", "acct", "DH1", "upsert")),
    result("c-so4", "acct", "failed", None, 21, error={"kind": "retries_exhausted", "message": "503"}, attempts=5),
    result("c-so4", "acct", "applied", "A1", 25, attempts=2),  # replayed from dlq.commands
    event("acct", "sale_order", 30, ACCT, origin="sync"),
    audit("acct", "sale_order", "A1", 30, ["SO-7", "X-1"]),
    event("acct", "sales_voucher", 40, VOUCHER),
    audit("acct", "sales_voucher", "V1", 40, ["SO-9"], command("c-so9", "SO-9", "crm", "DH1")),
    result("c-so9", "crm", "rejected", None, 41, error={"kind": "http_400", "message": "khóa sổ"}),
    event("acct", "receipt", 50, RECEIPT),
    audit("acct", "receipt", "R1", 50, ["SO-10"], command("c-so10", "SO-10", "crm", "DH1")),
    # another order and another tenant's record with the same id: not this one's story
    event("crm", "sale_order", 60, {"id": "O2", "code": "DH2", "revenue_status": "draft"}),
    Message("cdc.crm.sale_order", 0, 70, 70, {**event("crm", "sale_order", 70, ORDER).value, "tenant": "other"}),
]


def test_the_story_of_an_order_on_both_sides_in_time_order():
    story = build(T, "sale_order", "DH1", MESSAGES)
    assert [(v.event["system"], v.event["entity"], v.ts_ms, v.role) for v in story.versions] == [
        ("crm", "sale_order", 10, "record"),
        ("crm", "sale_order", 20, "record"),
        ("acct", "sale_order", 30, "record"),
        ("acct", "sales_voucher", 40, "document"),
        ("acct", "receipt", 50, "document"),
    ]
    created, proposed, echo, delivery, payment = story.versions
    assert created.who == "user an" and echo.who == "this integration (sync)"
    assert proposed.diff == {"revenue_status": ["draft", "proposed"]}
    (so4,) = proposed.decision.outcomes
    assert (so4.status, so4.target_id, so4.retried) == ("applied", "A1", True)  # failed, replayed, applied
    assert echo.decision.audit["rules"] == ["SO-7", "X-1"]
    (so9,) = delivery.decision.outcomes
    assert so9.status == "rejected" and so9.error == "http_400: khóa sổ"
    assert delivery.derived["values"]["delivered_quantities"] == [{"line_id": "L1", "delivered_quantity": "3"}]
    assert [v["code"] for v in delivery.derived["vouchers"]] == ["XK1"] and delivery.derived["receipts"] == []
    assert payment.derived["values"]["remaining_receivable"] == "600"
    assert [(r["code"], r["amount"]) for r in payment.derived["receipts"]] == [("PT1", "400")]
    (so10,) = payment.decision.outcomes
    assert so10.status == "pending"  # no result came back
    assert story.gone_note() is None and story.found


def test_found_by_either_id_alike():
    by_code = build(T, "sale_order", "DH1", MESSAGES).as_json()
    for identifier in ("O1", "A1"):
        other = build(T, "sale_order", identifier, MESSAGES).as_json()
        assert other["versions"] == by_code["versions"] and other["records"] == by_code["records"]


def test_a_story_older_than_what_is_retained_says_so():
    retention = Retention({"cdc.crm.sale_order": 15})  # the order's creation (ts 10) was deleted
    story = build(T, "sale_order", "DH1", [m for m in MESSAGES if m.timestamp_ms >= 15], retention)
    assert story.versions[0].ts_ms == 20
    note = story.gone_note()
    assert note and "no longer retained" in note and "cdc.crm.sale_order" in note
    whole = build(T, "sale_order", "DH1", MESSAGES, Retention({"cdc.crm.sale_order": 5}))
    assert whole.gone_note() is None  # it starts with its creation, after what was deleted


def test_an_unknown_record_has_no_story():
    assert not build(T, "sale_order", "DH9", MESSAGES).found


def test_field_diff_names_each_changed_field():
    assert field_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": [2, 3], "c": [None, 4]}
    assert field_diff(None, {"a": 1}) == {"a": [None, 1]}


def test_the_index_names_a_message_by_what_it_names():
    assert names_of("cdc.acct.sales_voucher", VOUCHER | {"x": 1}) is None  # no tenant
    assert names_of("cdc.acct.sales_voucher", {"tenant": T, "after": VOUCHER}) == (T, {"V1", "XK1", "A1"})
    assert names_of("cdc.acct.sale_order", {"tenant": T, "after": ACCT}) == (T, {"A1", "DH1", "O1"})
    assert names_of("audit.sync", MESSAGES[3].value) == (T, {"O1", "DH1", "c-so4"})
    assert names_of("results.acct", MESSAGES[5].value) == (T, {"c-so4", "A1", "DH1"})
    envelope = {"payload": {"op": "c", "after": {"id": "7", "code": "KH7"}}}
    assert names_of("cdc.crm.customer", envelope, [("tenant", T.encode())]) == (T, {"7", "KH7"})
