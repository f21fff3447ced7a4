"""The matrix on the real broker: a document walked through its statuses, state across workers."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.conftest import Worker, change_event, in_data_dir, last_assignment, wait_for_shared_partitions

pytestmark = pytest.mark.broker


def keyed(messages, topic, tenant):
    return [m["value"] for m in messages if m["topic"] == topic and m["key"] and m["key"].startswith(tenant + ":")]


def audits_for(messages, tenant):
    return keyed(messages, "audit.sync", tenant)


def test_crm_order_draft_proposed_recorded(kafka, worker, tenant):
    order = {
        "id": "O1",
        "code": "DH0001",
        "customer_code": "KH0100",
        "revenue_status": "draft",
        "lines": [{"line_id": "L1", "product_code": "SP01", "quantity": 2, "unit_price": "100000", "amount": "200000"}],
        "total_amount": "200000",
        "status": "not_started",
    }
    customer = {"id": "C100", "code": "KH0100", "name": "Khách lẻ"}
    product = {"id": "P1", "code": "SP01", "name": "Bút", "unit": "cái", "unit_price": "100000"}
    kafka.produce("cdc.crm.customer", change_event(tenant, "crm", "customer", customer), key=f"{tenant}:C100")
    kafka.produce("cdc.crm.product", change_event(tenant, "crm", "product", product), key=f"{tenant}:P1")
    kafka.read(["audit.sync"], until=lambda ms: len(audits_for(ms, tenant)) >= 2)

    kafka.produce("cdc.crm.sale_order", change_event(tenant, "crm", "sale_order", order), key=f"{tenant}:O1")
    proposed = dict(order, revenue_status="proposed")
    kafka.produce(
        "cdc.crm.sale_order",
        change_event(tenant, "crm", "sale_order", proposed, op="u", before=order),
        key=f"{tenant}:O1",
    )
    recorded = dict(proposed, revenue_status="recorded")
    kafka.produce(
        "cdc.crm.sale_order",
        change_event(tenant, "crm", "sale_order", recorded, op="u", before=proposed),
        key=f"{tenant}:O1",
    )

    # a decision's commands are in the transaction of its audit record: once the audits are read,
    # what the topics hold up to their end is all these changes made
    kafka.read(["audit.sync"], until=lambda ms: len(audits_for(ms, tenant)) >= 5)
    messages = kafka.read_to_end(["audit.sync", "commands.acct"])
    order_audits = [a for a in audits_for(messages, tenant) if a["entity"] == "sale_order"]
    assert [a["action"] for a in order_audits] == ["create", "propose_revenue", "record_revenue"]
    assert order_audits[0]["rules"] == ["SO-1"] and order_audits[0]["commands"] == []
    assert "revenue_status" in order_audits[0]["reason"]

    commands = keyed(messages, "commands.acct", tenant)
    by_rule = {}
    for command in commands:
        by_rule.setdefault(command["rule"], []).append(command)
    # the customer and the product go first, the order names them in depends_on
    (customer_cmd,) = by_rule["CUS-10"]
    (product_cmd,) = by_rule["PRD-1"]
    (upsert,) = by_rule["SO-4"]
    assert sorted(c["rule"] for c in commands) == ["CUS-10", "PRD-1", "SO-4", "SO-6"]
    # one record's commands share a message key, so they arrive in the order of their changes;
    # across records the order is carried by depends_on, which the connector honours.
    assert [c["rule"] for c in commands if c["key"]["code"] == "DH0001"] == ["SO-4", "SO-6"]
    assert customer_cmd["key"]["code"] == "KH0100" and customer_cmd["fields"]["name"] == "Khách lẻ"
    assert product_cmd["key"]["code"] == "SP01"
    assert upsert["entity"] == "sale_order" and upsert["op"] == "upsert"
    assert set(upsert["depends_on"]) == {customer_cmd["command_id"], product_cmd["command_id"]}
    assert upsert["fields"]["crm_id"] == "O1" and upsert["fields"]["revenue_status"] == "proposed"
    (record,) = by_rule["SO-6"]
    assert record["op"] == "update" and record["fields"] == {"revenue_status": "recorded"}
    assert record["key"]["code"] == "DH0001"


def test_invoice_request_proposed_approved_issued_cancelled(kafka, worker, tenant):
    request = {
        "id": "HD1",
        "code": "YC0001",
        "order_code": "DH0001",
        "status": "proposed",
        "amount": "200000",
        "description": "",
    }
    kafka.produce("cdc.crm.invoice", change_event(tenant, "crm", "invoice", request), key=f"{tenant}:HD1")
    acct = {"id": "AI1", "crm_id": "HD1", "status": "proposed"}
    steps = [
        dict(acct, status="approved"),
        dict(
            acct,
            status="issued",
            invoice_date="2026-11-27",
            invoice_no="0000123",
            lookup_code="ABC123",
            send_status="sent",
            customer_received=True,
        ),
        dict(acct, status="cancelled", reason="Sai thông tin người mua", invoice_no="0000123"),
    ]
    before = acct
    kafka.produce("cdc.acct.invoice", change_event(tenant, "acct", "invoice", acct), key=f"{tenant}:AI1")
    for after in steps:
        kafka.produce(
            "cdc.acct.invoice",
            change_event(tenant, "acct", "invoice", after, op="u", before=before),
            key=f"{tenant}:AI1",
        )
        before = after

    kafka.read(["audit.sync"], until=lambda ms: len(audits_for(ms, tenant)) >= 5)
    messages = kafka.read_to_end(["audit.sync", "commands.acct", "commands.crm"])  # with their audits' commands
    (proposal,) = keyed(messages, "commands.acct", tenant)
    assert proposal["rule"] == "INV-1" and proposal["entity"] == "invoice" and proposal["fields"]["crm_id"] == "HD1"
    crm = keyed(messages, "commands.crm", tenant)
    assert [c["rule"] for c in crm] == ["INV-4", "INV-6", "INV-8"]
    assert all(c["key"]["id"] == "HD1" and c["entity"] == "invoice" for c in crm)
    assert crm[0]["fields"] == {"status": "approved"}
    assert crm[1]["fields"]["status"] == "issued" and crm[1]["fields"]["invoice_no"] == "0000123"
    assert crm[1]["fields"]["lookup_code"] == "ABC123" and crm[1]["fields"]["customer_received"] is True
    assert crm[2]["fields"] == {"status": "cancelled", "description": "Sai thông tin người mua"}


def test_links_learnt_on_one_worker_are_read_on_another(kafka, module_settings, worker, tmp_path, tenant):
    """Six partitions, two workers: a CRM customer update (CUS-3) reads the link that the acct
    customer's event taught, wherever either was processed."""
    second = Worker(in_data_dir(module_settings, tmp_path / "second"), tmp_path / "second.log")

    try:
        second.wait_ready()
        wait_for_shared_partitions([worker, second], [kafka.name(f"cdc.{s}.customer") for s in ("acct", "crm")])
        codes = [f"KH{n:04d}" for n in range(24)]
        for n, code in enumerate(codes):
            kafka.produce(
                "cdc.acct.customer",
                change_event(tenant, "acct", "customer", {"id": f"A{n}", "code": code, "name": f"Khách {n}"}),
                key=f"{tenant}:A{n}",
            )
        kafka.read(["audit.sync"], until=lambda ms: len(audits_for(ms, tenant)) >= len(codes))
        # No pause for the other worker's copy of the links: a "not linked" decision rests on an absence,
        # and its batch is decided again once the worker has read the other workers' writes.
        for n, code in enumerate(codes):
            crm = {"id": f"C{n}", "code": code, "name": f"Khách {n}"}
            kafka.produce(
                "cdc.crm.customer",
                change_event(tenant, "crm", "customer", dict(crm, name=f"Khách {n} mới"), op="u", before=crm),
                key=f"{tenant}:C{n}",
            )
        kafka.read(["audit.sync"], until=lambda ms: len(audits_for(ms, tenant)) >= 2 * len(codes))
        messages = kafka.read_to_end(["commands.acct", "audit.sync"])  # with their audits' commands
        updates = keyed(messages, "commands.acct", tenant)
        assert sorted(c["key"]["code"] for c in updates) == codes, [
            a["reason"] for a in audits_for(messages, tenant) if a["system"] == "crm" and not a["commands"]
        ]
        assert all(c["rule"] == "CUS-3" and c["key"]["id"] == f"A{codes.index(c['key']['code'])}" for c in updates)
        # both workers owned CDC partitions while this ran (as their consumers logged their assignments)
        owned = [last_assignment(w.log_path.read_text(), kafka.name("cdc.crm.customer")) for w in (worker, second)]
        assert all(owned), owned
    finally:
        second.stop()


def test_tenant_settings_apply_to_the_events_that_follow(kafka, module_settings, worker, tenant, capsys):
    """`lienthong tenant set` writes config.tenants; the very next order of that tenant follows it."""
    from cli.main import main as cli

    order = {
        "id": "O9",
        "code": "DH0009",
        "customer_code": "KH9",
        "revenue_status": "proposed",
        "lines": [],
        "total_amount": "0",
    }
    env = {
        "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": module_settings.kafka.topic_prefix,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli(["tenant", "set", tenant, "--order-target", "contract"]) == 0
    # produced right after the setting, with no pause
    kafka.produce("cdc.crm.sale_order", change_event(tenant, "crm", "sale_order", order), key=f"{tenant}:O9")
    messages = kafka.read(
        ["commands.acct"],
        until=lambda ms: any(c["rule"] in ("CT-1", "SO-1") for c in keyed(ms, "commands.acct", tenant)),
    )
    documents = [c for c in keyed(messages, "commands.acct", tenant) if c["rule"] in ("CT-1", "SO-1")]
    assert [(c["rule"], c["entity"], c["op"]) for c in documents] == [("CT-1", "contract", "create")]

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli(["tenant", "set", tenant, "--order-target", "sale_order"]) == 0
    second = dict(order, id="O10", code="DH0010")
    kafka.produce("cdc.crm.sale_order", change_event(tenant, "crm", "sale_order", second), key=f"{tenant}:O10")
    messages = kafka.read(
        ["commands.acct"],
        until=lambda ms: any(c["key"]["code"] == "DH0010" for c in keyed(ms, "commands.acct", tenant)),
    )
    (again,) = [c for c in keyed(messages, "commands.acct", tenant) if c["key"]["code"] == "DH0010"]
    assert (again["rule"], again["entity"]) == ("SO-1", "sale_order")


def test_explain_prints_the_audit_trail_of_a_record(kafka, module_settings, worker, tenant, capsys, tmp_path):
    from cli.main import main as cli

    customer = {"id": "C5", "code": "KH0005", "name": "Khách 5"}
    kafka.produce("cdc.crm.customer", change_event(tenant, "crm", "customer", customer), key=f"{tenant}:C5")
    kafka.produce(
        "cdc.crm.customer",
        change_event(tenant, "crm", "customer", dict(customer, name="Khách 5b"), op="u", before=customer),
        key=f"{tenant}:C5",
    )
    kafka.read(["audit.sync"], until=lambda ms: len(audits_for(ms, tenant)) >= 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
        patch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
        patch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))  # history's index (explain is history's old name)
        capsys.readouterr()
        assert cli(["explain", tenant, "customer", "C5"]) == 0
        out = capsys.readouterr().out
        assert cli(["explain", tenant, "customer", "nobody"]) == 1
        assert cli(["explain", tenant, "customer", "KH0005", "--json"]) == 0  # by its code too
        found = orjson.loads(capsys.readouterr().out)
    assert [(c["system"], c["record_id"], c["rule"]) for c in found["changes"]] == [
        ("crm", "C5", "CUS-1"),
        ("crm", "C5", "CUS-3"),
    ]
    lines = out.splitlines()
    assert lines[0].startswith("customer C5 of ")
    assert "crm customer C5 (KH0005) create by user" in lines[1] and "decided: rules CUS-1" in lines[3]
    assert any("crm customer C5 (KH0005) update" in line for line in lines)
    assert "    name: Khách 5 -> Khách 5b" in lines and "    decided: rules CUS-3" in lines
    assert any("not linked" in line for line in lines)
