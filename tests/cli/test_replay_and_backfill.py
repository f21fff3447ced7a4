"""``lienthong dlq list|show|replay`` and ``lienthong backfill`` on the real broker with a real worker.

Both are idempotent in effect: a replayed change event keeps its ``event_id`` and a backfilled record
gets the same ``event_id`` each time, so the worker decides each change once; run twice, they leave
one audit record and one command per change. A later change of the same record (same key, so same
partition, after the repeats) is the marker that the worker has read past them.
"""

from __future__ import annotations

import time
import uuid

import aiohttp
import orjson
import pytest

from cli.main import main
from common.names import ERROR_KIND, ERROR_MESSAGE, FAILED_AT_MS, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC
from demo.local import CrmUser, crm_login, local_systems
from tests.integration.conftest import change_event

pytestmark = pytest.mark.broker


@pytest.fixture()
def cli_env(module_settings, monkeypatch):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
    return module_settings


def of_tenant(tenant: str, topic_messages: list[dict]) -> list[dict]:
    return [m for m in topic_messages if (m["key"] or "").startswith(f"{tenant}:")]


def test_dead_letters_are_listed_by_reason_tenant_and_time_shown_whole_and_replayed_once_in_effect(
    worker, kafka, tenant, cli_env, capsys
):
    # a letter the worker makes (not JSON) and one as a worker bug would have left it (internal)
    kafka.produce("cdc.crm.customer", b"not json", key=f"{tenant}:x")
    event = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH1", "name": "An Phát"})
    kafka.produce(
        "dlq.cdc",
        event,
        key=f"{tenant}:A1",
        headers={
            ERROR_KIND: b"internal",
            ERROR_MESSAGE: b"ZeroDivisionError: a bug since fixed",
            ORIGIN_TOPIC: kafka.name("cdc.acct.customer").encode(),
            ORIGIN_PARTITION: b"0",
            ORIGIN_OFFSET: b"0",
            FAILED_AT_MS: str(int(time.time() * 1000)).encode(),
        },
    )
    kafka.read(["dlq.cdc"], until=lambda m: len(of_tenant(tenant, m)) >= 2)

    assert main(["dlq", "list", "--tenant", tenant]) == 0
    listed = capsys.readouterr().out
    assert "dead letters on" in listed and ": 2" in listed and "decode" in listed and "internal" in listed
    assert main(["dlq", "list", "--tenant", tenant, "--kind", "internal", "--since", "1h"]) == 0
    listed = capsys.readouterr().out
    rows = [line for line in listed.splitlines() if tenant in line]
    assert len(rows) == 1 and "internal" in rows[0] and "decode" not in listed
    where = rows[0].split("│")[1].strip()
    assert main(["dlq", "list", "--tenant", tenant, "--until", "2000-01-01"]) == 0
    assert ": 0" in capsys.readouterr().out
    assert main(["dlq", "list", "--tenant", tenant, "--json"]) == 0  # the same letters, whole, for a script
    letters = orjson.loads(capsys.readouterr().out)
    assert sorted(letter["kind"] for letter in letters) == ["decode", "internal"]
    assert {letter["tenant"] for letter in letters} == {tenant} and where in [letter["where"] for letter in letters]

    assert main(["dlq", "show", where]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["kind"] == "internal" and shown["message"] == "ZeroDivisionError: a bug since fixed"
    assert shown["value"]["event_id"] == event["event_id"] and shown["headers"]["origin.offset"] == "0"
    assert shown["key"] == f"{tenant}:A1" and shown["tenant"] == tenant

    for _ in range(2):  # replayed twice: decided once
        assert main(["dlq", "replay", "--tenant", tenant, "--kind", "internal"]) == 0
        assert "1 dead letter(s) replayed" in capsys.readouterr().out
    later = change_event(
        tenant, "acct", "customer", {"id": "A1", "code": "KH1", "name": "An Phát 2"}, op="u", action="update"
    )
    kafka.produce("cdc.acct.customer", later, key=f"{tenant}:A1")
    audits = kafka.read(
        ["audit.sync"],
        until=lambda m: any(a["value"]["event_id"] == later["event_id"] for a in m),
        timeout=60,
    )
    decided = [a["value"] for a in audits if a["value"]["event_id"] == event["event_id"]]
    assert len(decided) == 1 and decided[0]["rule"] == "CUS-6"
    # a decision's commands are written in the transaction of its audit record: all there by now
    commands = kafka.read_to_end(["commands.crm"])
    assert len([c for c in commands if c["value"]["source"]["event_id"] == event["event_id"]]) == 1


def test_a_backfill_from_a_file_publishes_snapshots_whose_repeat_the_worker_drops(
    worker, kafka, tenant, cli_env, capsys, tmp_path
):
    records = tmp_path / "customers.jsonl"
    records.write_text(
        '{"id": "B1", "code": "KH-B1", "name": "Bình Minh"}\n'
        "\n"
        '{"entity": "customer", "record": {"id": "B2", "code": "KH-B2", "name": "Cát"}}\n'
    )
    argv = ["backfill", "--tenant", tenant, "--system", "acct", "--entity", "customer", "--from-file", str(records)]
    assert main(argv) == 0
    assert "2 snapshot event(s) (op r)" in capsys.readouterr().out
    assert main(argv) == 0
    events = of_tenant(tenant, kafka.read(["cdc.acct.customer"], until=lambda m: len(of_tenant(tenant, m)) >= 4))
    assert {e["key"] for e in events} == {f"{tenant}:B1", f"{tenant}:B2"}
    assert all(e["value"]["op"] == "r" and e["value"]["event_id"].startswith("backfill-") for e in events)
    ids = [e["value"]["event_id"] for e in events]
    assert len(set(ids)) == 2 and all(ids.count(i) == 2 for i in ids)  # the second run: the same ids

    markers = []
    for record_id, code in (("B1", "KH-B1"), ("B2", "KH-B2")):  # one per partition the snapshots used
        later = change_event(tenant, "acct", "customer", {"id": record_id, "code": code, "name": "later"}, op="u")
        kafka.produce("cdc.acct.customer", later, key=f"{tenant}:{record_id}")
        markers.append(later["event_id"])
    audits = kafka.read(
        ["audit.sync"],
        until=lambda m: set(markers) <= {a["value"]["event_id"] for a in m},
        timeout=60,
    )
    backfilled = set(ids)
    decided = [a["value"] for a in audits if a["value"]["event_id"] in backfilled]
    assert len(decided) == 2 and {a["rule"] for a in decided} == {"CUS-6"}


async def test_a_backfill_from_crm_reads_every_page_through_the_api_client(
    module_settings, kafka, cli_env, monkeypatch, capsys, tmp_path
):
    import asyncio

    tenant = f"bf-{uuid.uuid4().hex[:8]}"
    async with local_systems(
        kafka=module_settings.kafka,
        data_dir=tmp_path / "systems",
        tenants=[tenant],
    ) as systems:
        async with aiohttp.ClientSession() as session:
            sales = CrmUser(systems, tenant, session)
            for n in range(3):
                await sales.save("customer", {"code": f"KH{n}", "name": f"Khách {n}"})
            await sales.save("product", {"code": "SP1", "name": "Bút", "unit_price": "5000"})
        client_id, secret = crm_login(tenant)
        monkeypatch.setenv("LIENTHONG_CRM_URL", systems.crm.url)
        monkeypatch.setenv(
            "LIENTHONG_CRM_CREDENTIALS",
            orjson.dumps({tenant: {"client_id": client_id, "client_secret": secret}}).decode(),
        )
        assert await asyncio.to_thread(main, ["backfill", "--tenant", tenant, "--system", "crm"]) == 0
    out = capsys.readouterr().out
    assert "4 snapshot event(s)" in out

    def backfilled(messages: list[dict]) -> list[dict]:
        return [m for m in of_tenant(tenant, messages) if m["value"]["event_id"].startswith("backfill-")]

    events = backfilled(kafka.read(["cdc.crm.customer", "cdc.crm.product"], until=lambda m: len(backfilled(m)) >= 4))
    assert sorted((e["topic"], e["value"]["after"]["code"]) for e in events) == [
        ("cdc.crm.customer", "KH0"),
        ("cdc.crm.customer", "KH1"),
        ("cdc.crm.customer", "KH2"),
        ("cdc.crm.product", "SP1"),
    ]
    assert all(e["key"] == f"{tenant}:{e['value']['after']['id']}" and e["value"]["op"] == "r" for e in events)
