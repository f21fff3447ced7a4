"""``lienthong reconcile`` against both sandboxes (in-process, speaking the public AMIS APIs) and the real broker.

Drift is seeded as a person would make it (an accountant and a sales person editing each side); the
command shows it as a table, ``--repair`` puts the fixing commands on ``commands.crm`` where the CRM
connector applies them, the sandboxes converge, and a second ``--repair`` sends nothing.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from cli.main import main
from common.names import System
from demo.local import APP_ID, Accountant, CrmUser, acct_access, crm_login, local_systems
from ops.reconcile import Side, compare
from streams.core.rules import load_rules

pytestmark = pytest.mark.broker


def use_systems(monkeypatch, settings, systems, tenant: str) -> None:
    """The settings a user gives the command: where the APIs are and the integration's credentials."""
    client_id, secret = crm_login(tenant)
    access_code, company = acct_access(tenant)
    env = {
        "LIENTHONG_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": settings.kafka.topic_prefix,
        "LIENTHONG_CRM_URL": systems.crm.url,
        "LIENTHONG_ACCT_URL": systems.acct.url,
        "LIENTHONG_CRM_CREDENTIALS": orjson.dumps({tenant: {"client_id": client_id, "client_secret": secret}}).decode(),
        "LIENTHONG_ACCT_APP_ID": APP_ID,
        "LIENTHONG_ACCT_CREDENTIALS": orjson.dumps(
            {tenant: {"access_code": access_code, "org_company_code": company}}
        ).decode(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def eventually(check, timeout: float = 60.0):  # the machine is shared: generous
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout}s")


async def test_drift_is_shown_repaired_through_the_connector_and_a_second_repair_sends_nothing(
    module_settings, kafka, tenant, tmp_path, monkeypatch, capsys
):
    async with local_systems(
        kafka=module_settings.kafka,
        data_dir=tmp_path / "systems",
        tenants=[tenant],
    ) as systems:
        async with aiohttp.ClientSession() as session:
            accountant, sales = Accountant(systems, tenant, session), CrmUser(systems, tenant, session)
            # linked by code, but CRM shows another name (someone edited it there; no sync carried it)
            await accountant.save("customer", {"code": "KH1", "name": "Công ty An Phát", "tax_code": "0101"})
            await sales.save("customer", {"code": "KH1", "name": "Cong ty An Phat (cu)", "tax_code": "0101"})
            # a product accounting has and CRM lacks; a customer only CRM has (CUS-1: not synced)
            await accountant.save("product", {"code": "SP1", "name": "Bút bi", "unit": "cái", "unit_price": "5000"})
            await sales.save("customer", {"code": "KH9", "name": "Chỉ có ở CRM"})
        use_systems(monkeypatch, module_settings, systems, tenant)

        assert await run(["reconcile", "--tenant", tenant]) == 1  # drift found, nothing sent
        shown = capsys.readouterr().out
        kh1 = next(line for line in shown.splitlines() if "KH1" in line and " name " in line)
        assert "Công ty An Phát" in kh1 and "Cong ty An Phat (cu)" in kh1 and "CUS-8" in kh1
        # the same report for a script: one JSON document, the same exit status
        assert await run(["reconcile", "--tenant", tenant, "--json"]) == 1
        report = orjson.loads(capsys.readouterr().out)
        assert report["tenant"] == tenant and report["source"] == "acct" and report["sent"] == 0
        (name,) = [d for d in report["drift"] if d["code"] == "KH1" and d["field"] == "name"]
        assert name == {**name, "crm": "Cong ty An Phat (cu)", "acct": "Công ty An Phát", "rule": "CUS-8"}
        assert any(c["rule"] == "CUS-8" and c["key"] == "KH1" for c in report["commands"])
        assert any("SP1" in line and "missing_in_crm" in line and "PRD-3" in line for line in shown.splitlines())
        assert any("KH9" in line and "missing_in_acct" in line for line in shown.splitlines())
        assert "--repair" in shown

        assert await run(["reconcile", "--tenant", tenant, "--repair"]) == 0
        sent = capsys.readouterr().out
        commands = kafka.read(["commands.crm"], until=lambda m: len(m) >= 2, timeout=60)
        sent_rules = {(m["value"]["rule"], m["value"]["key"]["code"]) for m in commands}
        assert sent_rules == {("CUS-8", "KH1"), ("PRD-3", "SP1")}
        assert all(m["key"] == f"{tenant}:{m['value']['entity']}:{m['value']['key']['code']}" for m in commands)
        assert "2 repair command(s)" in sent
        audits = kafka.read(["audit.sync"], until=lambda m: len(m) >= 2, timeout=60)
        assert {a["value"]["commands"][0]["command_id"] for a in audits} == {m["value"]["command_id"] for m in commands}

        # the CRM connector applies them: CRM converges to accounting
        await eventually(lambda: (systems.crm_record(tenant, "customer", "KH1") or {}).get("name") == "Công ty An Phát")
        await eventually(lambda: systems.crm_record(tenant, "product", "SP1"))
        assert systems.crm_record(tenant, "product", "SP1")["unit_price"] == "5000"

        assert await run(["reconcile", "--tenant", tenant, "--repair"]) == 0
        again = capsys.readouterr().out
        assert "KH1" not in again and "SP1" not in again  # converged
        assert "KH9" in again and "0 command(s) would repair" in again  # CUS-1: not for a repair to create
        # the command has returned, so whatever it sent is on the broker: still the two repairs alone
        assert len(kafka.read_to_end(["commands.crm"])) == 2


def side(record: dict, version: str = "2026-11-28T09:00:00+07:00") -> Side:
    return Side(record, version)


def test_the_same_drift_gives_the_same_command_ids_and_a_new_edit_a_new_one():
    rules = load_rules()
    acct = [side({"id": "A1", "code": "KH1", "name": "An Phát"})]
    crm = [side({"id": "7", "code": "KH1", "name": "An Phat"})]
    first = compare("t1", "customer", crm, acct, source=System.ACCT, rules=rules, now_ms=1)[2]
    second = compare("t1", "customer", crm, acct, source=System.ACCT, rules=rules, now_ms=2)[2]
    assert [c.command_id for c in first] == [c.command_id for c in second] and len(first) == 1
    assert first[0].key.id == "7" and first[0].fields["name"] == "An Phát"
    # CRM edited again to the same wrong value later: a new version, so a new command (not a 'duplicate')
    later = [side({"id": "7", "code": "KH1", "name": "An Phat"}, "2026-11-29T10:00:00+07:00")]
    third = compare("t1", "customer", later, acct, source=System.ACCT, rules=rules, now_ms=3)[2]
    assert third[0].command_id != first[0].command_id


def test_an_accounting_record_is_paired_by_its_crm_id_before_its_code_and_crm_can_be_the_source():
    rules = load_rules()
    acct = [side({"id": "A1", "code": "KH1-NEW", "name": "X", "crm_id": "7"})]
    crm = [side({"id": "7", "code": "KH1", "name": "Y"})]
    _, drift, commands, _ = compare("t1", "customer", crm, acct, source=System.CRM, rules=rules, now_ms=1)
    assert {(d.field, d.crm, d.acct) for d in drift} >= {("name", "Y", "X"), ("code", "KH1", "KH1-NEW")}
    (command,) = commands
    assert command.rule == "CUS-3" and command.target is System.ACCT and command.key.id == "A1"
