"""``lienthong history`` on the real broker: an order proposed in CRM, recorded in accounting, partly
delivered, invoiced and paid shows each step, on both sides, with its rule and each command's result;
``explain`` (its old name) answers the same; the second question is answered from the index."""

from __future__ import annotations

import orjson
import pytest

from common.topic_wait import watermarks
from tests.integration.conftest import change_event

pytestmark = pytest.mark.broker


def audits_of(messages: list[dict], tenant: str) -> list[dict]:
    return [m["value"] for m in messages if m["topic"] == "audit.sync" and (m["key"] or "").startswith(tenant + ":")]


def test_history_of_an_order_proposed_recorded_delivered_invoiced_paid(
    kafka, module_settings, worker, tenant, tmp_path, capsys
):
    from cli.main import main as cli

    def step(topic: str, event: dict, key: str) -> dict:
        """Produce a change and wait for its decision (audit.sync is keyed by record: read by event id)."""
        kafka.produce(topic, event, key=f"{tenant}:{key}")

        def decided(ms: list[dict]) -> list[dict]:
            return [a for a in audits_of(ms, tenant) if a["event_id"] == event["event_id"]]

        return decided(kafka.read(["audit.sync"], until=decided))[0]

    def result(system: str, command: dict, status: str, target_id: str | None, **extra: object) -> None:
        key = f"{tenant}:{command['entity']}:{command['key']}"
        value = {
            "command_id": command["command_id"],
            "tenant": tenant,
            "target": system,
            "entity": command["entity"],
            "status": status,
            "target_id": target_id,
            "code": command["key"],
            "error": extra.get("error"),
            "attempts": extra.get("attempts", 1),
            "ts_ms": 1,
        }
        kafka.produce(f"results.{system}", value, key=key)

    line = {"line_id": "L1", "product_code": "SP01", "quantity": 10, "unit_price": "10000", "amount": "100000"}
    draft = {
        "id": "O1",
        "code": "DH0001",
        "customer_code": "KH0001",
        "revenue_status": "draft",
        "total_amount": "100000",
        "lines": [line],
        "modified_by": "sales.an",
    }
    step("cdc.crm.sale_order", change_event(tenant, "crm", "sale_order", draft), "O1")
    proposed = dict(draft, revenue_status="proposed")
    audit = step("cdc.crm.sale_order", change_event(tenant, "crm", "sale_order", proposed, op="u", before=draft), "O1")
    commands = {c["rule"]: c for c in audit["commands"]}
    result("acct", commands["CUS-10"], "applied", "AC1")
    result("acct", commands["PRD-1"], "applied", "AP1")
    result("acct", commands["SO-4"], "applied", "AO1", attempts=3)  # the API answered 503 twice

    acct_line = {"line_id": "L1", "product_code": "SP01", "quantity": 10, "amount": "100000"}
    acct = {
        "id": "AO1",
        "code": "DH0001",
        "crm_id": "O1",
        "revenue_status": "proposed",
        "total_amount": "100000",
        "lines": [acct_line],
        "modified_by": "lienthong",
    }
    step("cdc.acct.sale_order", change_event(tenant, "acct", "sale_order", acct, origin="sync"), "AO1")
    recorded = dict(acct, revenue_status="recorded", modified_by="ketoan.binh")
    recording = change_event(tenant, "acct", "sale_order", recorded, op="u", before=acct)
    audit = step("cdc.acct.sale_order", recording, "AO1")
    (so8,) = [c for c in audit["commands"] if c["rule"] == "SO-8"]
    result("crm", so8, "rejected", None, error={"kind": "http_400", "message": "đơn hàng đang bị khóa"})

    voucher = {
        "id": "V1",
        "code": "XK0001",
        "order_id": "AO1",
        "lines": [{"line_id": "L1", "product_code": "SP01", "quantity": 4, "amount": "40000"}],
    }
    documents = [step("cdc.acct.sales_voucher", change_event(tenant, "acct", "sales_voucher", voucher), "V1")]
    invoiced = dict(voucher, invoice_no="0000123", invoice_date="2026-12-07")
    invoicing = change_event(tenant, "acct", "sales_voucher", invoiced, op="u", before=voucher)
    documents.append(step("cdc.acct.sales_voucher", invoicing, "V1"))
    receipt = {"id": "R1", "code": "PT0001", "order_id": "AO1", "amount": "100000"}
    documents.append(step("cdc.acct.receipt", change_event(tenant, "acct", "receipt", receipt), "R1"))
    derived = [command for audit in documents for command in audit["commands"]]
    for command in derived:
        result("crm", command, "applied", "O1")

    def done(ms: list[dict]) -> bool:  # every result is on the broker
        return sum(1 for m in ms if (m["key"] or "").startswith(tenant + ":")) >= 4 + len(derived)

    kafka.read(["results.acct", "results.crm"], until=done)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
        patch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
        patch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))
        capsys.readouterr()
        assert cli(["history", tenant, "sale_order", "DH0001", "--json"]) == 0
        story = orjson.loads(capsys.readouterr().out)
        assert cli(["explain", tenant, "sale_order", "AO1"]) == 0  # the old name, by the accounting id
        text = capsys.readouterr().out
        assert cli(["history", tenant, "sale_order", "DH0999"]) == 1
        missing = capsys.readouterr().err
        assert cli(["history", "nobody-here", "sale_order", "DH0001"]) == 2
        unknown_tenant = capsys.readouterr().err

    steps = [
        (v["system"], v["entity"], v["record_id"], v["who"], v["decision"]["rules"] if v["decision"] else None)
        for v in story["versions"]
    ]
    assert steps == [
        ("crm", "sale_order", "O1", "user sales.an", ["SO-1"]),
        ("crm", "sale_order", "O1", "user sales.an", ["SO-4", "X-4"]),
        ("acct", "sale_order", "AO1", "this integration (sync)", ["SO-7", "X-1"]),
        ("acct", "sale_order", "AO1", "user ketoan.binh", ["SO-8"]),
        ("acct", "sales_voucher", "V1", "user", story["versions"][4]["decision"]["rules"]),
        ("acct", "sales_voucher", "V1", "user", story["versions"][5]["decision"]["rules"]),
        ("acct", "receipt", "R1", "user", story["versions"][6]["decision"]["rules"]),
    ]
    versions = story["versions"]
    assert versions[1]["diff"] == {"revenue_status": ["draft", "proposed"]}
    outcomes = {c["rule"]: c for c in versions[1]["decision"]["commands"]}
    assert outcomes["SO-4"]["status"] == "applied" and outcomes["SO-4"]["target_id"] == "AO1"
    assert outcomes["SO-4"]["retried"] and outcomes["SO-4"]["attempts"] == 3
    assert {outcomes["CUS-10"]["status"], outcomes["PRD-1"]["status"]} == {"applied"}
    assert versions[3]["diff"]["revenue_status"] == ["proposed", "recorded"]
    (so8,) = versions[3]["decision"]["commands"]
    assert so8["status"] == "rejected" and "đơn hàng đang bị khóa" in so8["error"]
    # the delivery: 4 of 10 delivered, from voucher XK0001
    delivery = versions[4]
    assert {"SO-9", "SO-13"} <= set(delivery["decision"]["rules"])
    assert delivery["derived"]["values"]["delivered_quantities"] == [{"line_id": "L1", "delivered_quantity": "4"}]
    assert delivery["derived"]["values"]["delivery_status"] == "delivering"
    assert [v["code"] for v in delivery["derived"]["vouchers"]] == ["XK0001"]
    # invoiced: the voucher's invoice number makes the invoiced total
    invoicing = versions[5]
    assert "SO-12" in invoicing["decision"]["rules"] and invoicing["diff"]["invoice_no"] == [None, "0000123"]
    assert invoicing["derived"]["values"]["invoicing_status"] == "invoiced"
    assert invoicing["derived"]["values"]["invoiced_amount"] == "40000"
    # paid: remaining receivable 0, from receipt PT0001
    paid = versions[6]
    assert {"SO-10", "SO-14"} <= set(paid["decision"]["rules"])
    assert (
        paid["derived"]["values"]["remaining_receivable"] == "0" and paid["derived"]["values"]["pay_status"] == "paid"
    )
    assert [r["code"] for r in paid["derived"]["receipts"]] == ["PT0001"]
    assert {c["status"] for c in paid["decision"]["commands"]} == {"applied"}
    assert story["not_retained"] is None

    lines = text.splitlines()
    assert lines[0].startswith(f"sale_order AO1 of {tenant}: acct AO1, crm O1")
    assert any("acct sale_order AO1 (DH0001) record_revenue by user ketoan.binh" in line for line in lines)
    assert any("revenue_status: proposed -> recorded" in line for line in lines)
    assert any("SO-8" in line and "rejected: http_400: đơn hàng đang bị khóa" in line for line in lines)
    assert any("made of (order total 100000): voucher XK0001 (L1: 4; 40000)" in line for line in lines)
    assert any("receipt PT0001 (100000)" in line for line in lines)
    assert f"no sale_order 'DH0999' of tenant {tenant}" in missing and len(missing.splitlines()) == 1
    assert "no message of tenant 'nobody-here'" in unknown_tenant and len(unknown_tenant.splitlines()) == 1

    # the operator's page shows the same story, from the index it keeps current
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from ops.dashboard.web import create_dashboard
    from ops.history import KeptIndex

    async def page() -> tuple[str, str]:
        app = create_dashboard(module_settings.kafka, history=KeptIndex(module_settings.kafka, tmp_path / "page"))
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            record = await (await client.get(f"/record/{tenant}/sale_order/O1")).text()
            story = await (await client.get(f"/history/{tenant}/sale_order/DH0001")).text()
        finally:
            await client.close()
        return record, story

    record_page, history_page = asyncio.run(page())
    assert f'href="/history/{tenant}/sale_order/O1"' in record_page
    assert "acct sale_order AO1 (DH0001) record_revenue by user ketoan.binh" in history_page
    assert "rejected: http_400: đơn hàng đang bị khóa" in history_page
    assert "receipt PT0001 (100000)" in history_page


def test_history_says_when_the_records_story_starts_before_what_is_retained(
    kafka, module_settings, worker, tenant, tmp_path, capsys
):
    """The start of the record's topic deleted (as retention does): the story shows what is left and says
    plainly that older versions are gone."""
    from confluent_kafka import Consumer, TopicPartition

    from cli.main import main as cli
    from common.kafka_config import confluent_config
    from ops.admin import admin_client

    topic = kafka.name("cdc.crm.customer")
    reader = Consumer(confluent_config(module_settings.kafka, {"group.id": "watermarks"}))
    try:
        _, first = watermarks(reader, TopicPartition(topic, 0), 10)
    finally:
        reader.close()
    customer = {"id": "C9", "code": "KH0009", "name": "Khách 9"}
    renamed = dict(customer, name="Khách chín")
    for event in (
        change_event(tenant, "crm", "customer", customer),
        change_event(tenant, "crm", "customer", renamed, op="u", before=customer),
    ):
        kafka.producer.produce(topic, key=f"{tenant}:C9".encode(), value=orjson.dumps(event), partition=0)
    kafka.producer.flush(10)

    def ask() -> dict:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
            patch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
            patch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))
            capsys.readouterr()
            assert cli(["history", tenant, "customer", "KH0009", "--json"]) == 0
            return orjson.loads(capsys.readouterr().out)

    whole = ask()
    assert [v["op"] for v in whole["versions"]] == ["c", "u"] and whole["not_retained"] is None
    admin = admin_client(module_settings.kafka)  # kept until its answer came
    futures = admin.delete_records([TopicPartition(topic, 0, first + 1)])
    for future in futures.values():
        future.result(10)
    cut = ask()  # the same index, brought up to date: it notices the partition's new start
    assert [v["op"] for v in cut["versions"]] == ["u"]
    assert cut["versions"][0]["diff"] == {"name": ["Khách 9", "Khách chín"]}
    assert "no longer retained" in cut["not_retained"] and "cdc.crm.customer" in cut["not_retained"]
