"""CRM change capture against the CRM sandbox (the public Open API v2, in-process) and the real broker.

CRM pushes nothing and lists have no filter: capture reads newest first by ``modified_date``. What a
user relies on: records sharing a timestamp across a page boundary are all read; a record changed
while a scan pages through the list is reported; deletions are noticed; a restart in the middle of a
scan loses nothing and re-reports under the same event ids; the integration's own writes come out
as ``origin = sync``; ``before`` is the last image seen, kept across restarts.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from amis.crm_client import CrmClient, CrmCredentials
from amis.ledger import LocalWrites, WriteLedger
from capture.crm import CrmCapture
from capture.state import CaptureState, ChangeReporter, CrashForTest, new_producer
from common.kafka_config import confluent_config
from common.names import System
from connectors.writers import CrmWriter
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import RESOURCES, CrmStore
from sandboxes.settings import CrmAnswers
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id
from streams.settings import WorkerSettings
from tests.capture.conftest import events_of

pytestmark = pytest.mark.broker

CUSTOMERS = RESOURCES["Customers"]
PERSON = "nhan-vien-kinh-doanh"  # a salesperson working in CRM's screens


class Clock:
    """CRM's clock: tests set it to give records equal or distinct modified_date values."""

    def __init__(self) -> None:
        self.now = time.time() - 3600

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@dataclass
class World:
    tenant: str
    store: CrmStore
    clock: Clock
    client: CrmClient
    ledger: WriteLedger
    settings: WorkerSettings
    state_path: Path
    session: aiohttp.ClientSession

    def capture(self, *, page_size: int = 3, overlap_s: float = 0.0, crash_after: int | None = None) -> CrmCapture:
        reporter = ChangeReporter(
            System.CRM,
            CaptureState(self.state_path),
            self.ledger,
            new_producer(confluent_config(self.settings.kafka)),
            topic_prefix=self.settings.kafka.topic_prefix,
            crash_after=crash_after,
        )
        return CrmCapture(
            self.client, reporter, [self.tenant], entities=["customer"], page_size=page_size, overlap_s=overlap_s
        )

    def person_creates(self, code: str, name: str) -> int:
        return self.store.create(self.tenant, CUSTOMERS, {"account_number": code, "account_name": name}, PERSON)

    def person_edits(self, record_id: int, **fields: object) -> None:
        assert self.store.update(self.tenant, CUSTOMERS, {"id": record_id, **fields}, PERSON)

    def person_deletes(self, record_id: int) -> None:
        assert self.store.delete(self.tenant, CUSTOMERS, record_id, PERSON)


@contextlib.asynccontextmanager
async def crm_world(
    module_settings: WorkerSettings, tmp_path: Path, tenant: str, answers: CrmAnswers | None = None
) -> AsyncIterator[World]:
    """``answers``: the sandbox's, where the reference allows several (tests/capture/test_crm_unknowns.py)."""
    clock = Clock()
    store = CrmStore(tmp_path / "crm.sqlite", clock=clock)
    server = TestServer(
        create_crm_sandbox(store, credentials={"app-1": tenant, "app-1:secret": "s3cret"}, answers=answers)
    )
    await server.start_server()
    session = aiohttp.ClientSession()
    client = CrmClient(
        str(server.make_url("/api/v2")), session, {tenant: CrmCredentials("app-1", SecretStr("s3cret"))}, clock=clock
    )
    ledger = WriteLedger(tmp_path / "crm-shared.sqlite")
    try:
        yield World(tenant, store, clock, client, ledger, module_settings, tmp_path / "crm-capture.sqlite", session)
    finally:
        await session.close()
        await server.close()
        ledger.close()
        store.close()


def close(capture: CrmCapture) -> None:
    capture.reporter.producer.flush(10)
    capture.state.close()


async def test_records_sharing_a_timestamp_across_page_boundaries_are_all_read(module_settings, tmp_path, tenant):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        ids = [world.person_creates(f"KH{n:02d}", f"Khách {n}") for n in range(7)]  # one modified_date for all
        capture = world.capture(page_size=3, overlap_s=0)
        assert await capture.poll(tenant, "customer") == 7
        # still the same millisecond: a new record and an edit of one on the second page share the watermark
        world.person_creates("KH07", "Khách 7")
        world.person_edits(ids[2], account_name="Đổi tên")
        assert await capture.poll(tenant, "customer") == 2
        assert await capture.poll(tenant, "customer") == 0  # read again (ties), and no news
        close(capture)
    events = await_events(module_settings, tenant)
    assert Counter(e["op"] for e in events) == {"r": 7, "c": 1, "u": 1}
    update = next(e for e in events if e["op"] == "u")
    assert update["before"]["name"] == "Khách 2" and update["after"]["name"] == "Đổi tên"
    assert {e["after"]["code"] for e in events} == {f"KH{n:02d}" for n in range(8)}


def await_events(settings: WorkerSettings, tenant: str) -> list[dict]:
    return events_of(settings.kafka, "cdc.crm.customer", tenant)


async def test_a_record_changed_while_the_scan_pages_through_is_reported(module_settings, tmp_path, tenant):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        ids = []
        for n in range(6):
            ids.append(world.person_creates(f"KH{n}", f"Khách {n}"))
            world.clock.tick()
        capture = world.capture(page_size=2, overlap_s=0)
        await capture.poll(tenant, "customer")
        world.person_edits(ids[0], account_name="Sửa lần 1")
        world.clock.tick()
        original = world.client.list_page
        pages_read = []

        async def a_person_edits_between_pages(tenant_, resource, page, size=100, **kw):
            rows = await original(tenant_, resource, page, size, **kw)
            pages_read.append(page)
            if page == 1 and len(pages_read) == 1:
                world.person_edits(ids[3], account_name="Sửa giữa lúc đọc")  # moves to the top of the list
                world.clock.tick()
            return rows

        world.client.list_page = a_person_edits_between_pages  # type: ignore[assignment]
        await capture.poll(tenant, "customer")
        await capture.poll(tenant, "customer")
        close(capture)
    events = await_events(module_settings, tenant)
    updates = [e for e in events if e["op"] == "u"]
    assert sorted(e["after"]["name"] for e in updates) == ["Sửa giữa lúc đọc", "Sửa lần 1"]
    assert len({e["event_id"] for e in events}) == len(events) == 8


async def test_a_record_skipped_by_a_deletion_during_the_first_scan_is_found_by_the_full_listing(
    module_settings, tmp_path, tenant
):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        ids = []
        for n in range(5):
            ids.append(world.person_creates(f"KH{n}", f"Khách {n}"))
            world.clock.tick()
        capture = world.capture(page_size=2, overlap_s=0)
        original = world.client.list_page
        deleted: list[int] = []

        async def a_person_deletes_between_pages(tenant_, resource, page, size=100, **kw):
            rows = await original(tenant_, resource, page, size, **kw)
            if page == 1 and not deleted:
                deleted.append(ids[4])
                world.person_deletes(ids[4])  # the newest: every row after it moves up by one
            return rows

        world.client.list_page = a_person_deletes_between_pages  # type: ignore[assignment]
        await capture.poll(tenant, "customer")
        world.client.list_page = original  # type: ignore[method-assign]
        await capture.scan_deletions(tenant, "customer")
        close(capture)
    events = await_events(module_settings, tenant)
    seen = {e["after"]["code"] for e in events if e["after"]}
    assert seen == {"KH0", "KH1", "KH2", "KH3", "KH4"}  # KH2 was skipped by the shift, found by the listing
    (deletion,) = [e for e in events if e["op"] == "d"]
    assert deletion["before"]["code"] == "KH4" and deletion["after"] is None


async def test_deletions_are_noticed_with_the_last_image_as_before(module_settings, tmp_path, tenant):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        keep = world.person_creates("KH1", "Còn lại")
        gone = world.person_creates("KH2", "Sẽ xoá")
        capture = world.capture(page_size=100)
        capture.deletion_scan_every = 1
        await capture.poll_all()
        world.person_edits(gone, account_name="Tên cuối cùng")
        world.clock.tick()
        await capture.poll_all()
        world.person_deletes(gone)
        await capture.poll_all()
        await capture.poll_all()  # gone already reported: nothing more
        close(capture)
    events = await_events(module_settings, tenant)
    deletions = [e for e in events if e["op"] == "d"]
    assert len(deletions) == 1 and deletions[0]["before"]["name"] == "Tên cuối cùng"
    assert deletions[0]["before"]["id"] == str(gone) and deletions[0]["origin"] == "user"
    assert [e["op"] for e in events if (e["after"] or e["before"])["id"] == str(keep)] == ["r"]


async def test_a_restart_in_the_middle_of_a_scan_loses_nothing_and_repeats_the_same_event_ids(
    module_settings, tmp_path, tenant
):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        ids = []
        for n in range(7):
            ids.append(world.person_creates(f"KH{n}", f"Khách {n}"))
            world.clock.tick(0.5)
        # what an uninterrupted capture reports (its own state, the same sandbox)
        reference = World(**{**world.__dict__, "state_path": tmp_path / "reference.sqlite"})
        steady = reference.capture(page_size=3)
        await steady.poll(tenant, "customer")
        crashing = world.capture(page_size=3, crash_after=4)
        with pytest.raises(CrashForTest):
            await crashing.poll(tenant, "customer")
        close(crashing)
        restarted = world.capture(page_size=3)
        await restarted.poll(tenant, "customer")
        # a change after the restart, interrupted once more on its way out
        world.person_edits(ids[1], account_name="Sửa")
        world.person_edits(ids[5], account_name="Sửa nữa")
        world.clock.tick()
        await steady.poll(tenant, "customer")
        close(restarted)
        crashing = world.capture(page_size=3, crash_after=1)
        with pytest.raises(CrashForTest):
            await crashing.poll(tenant, "customer")
        close(crashing)
        restarted = world.capture(page_size=3)
        await restarted.poll(tenant, "customer")
        assert await restarted.poll(tenant, "customer") == 0
        close(restarted)
        close(steady)
    events = await_events(module_settings, tenant)
    steady_ids = Counter(e["event_id"] for e in events)
    # each event is there twice (the reference and the crashed-then-restarted capture) or three times
    # (the one the crash re-reported): the same ids, none new, none missing
    assert set(steady_ids.values()) <= {2, 3} and len(steady_ids) == 9
    assert Counter(steady_ids.values())[3] == 2  # the event in flight at each crash, reported again
    assert all(e["op"] in ("r", "u") for e in events)


async def test_the_integrations_own_writes_come_out_as_sync_and_a_persons_as_user(module_settings, tmp_path, tenant):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        writer = CrmWriter(world.client, LocalWrites(world.ledger))
        capture = world.capture(page_size=100)
        await capture.poll(tenant, "customer")  # an empty CRM: the snapshot is done
        await writer.apply(command(tenant, "KH-SYNC", {"name": "Từ kế toán", "tax_code": "0101"}))
        world.clock.tick()
        await capture.poll(tenant, "customer")
        (record,) = world.store.by_codes(tenant, "Customers", ["KH-SYNC"])
        world.person_edits(record["id"], office_tel="0909")
        world.clock.tick()
        await capture.poll(tenant, "customer")
        await writer.apply(command(tenant, "KH-SYNC", {"name": "Đổi từ kế toán"}))
        world.clock.tick()
        await capture.poll(tenant, "customer")
        # created by the integration, then edited by a person before capture polled: both, in order
        await writer.apply(command(tenant, "KH-BOTH", {"name": "Tạo bởi tích hợp"}))
        (both,) = world.store.by_codes(tenant, "Customers", ["KH-BOTH"])
        world.clock.tick()
        world.person_edits(both["id"], office_tel="0281")
        world.clock.tick()
        await capture.poll(tenant, "customer")
        close(capture)
    events = await_events(module_settings, tenant)
    sync_code = [(e["op"], e["origin"]) for e in events if (e["after"] or {}).get("code") == "KH-SYNC"]
    assert sync_code == [("c", "sync"), ("u", "user"), ("u", "sync")]
    person = next(e for e in events if e["origin"] == "user" and e["after"]["code"] == "KH-SYNC")
    assert person["before"].get("phone") is None and person["after"]["phone"] == "0909"
    both_events = [(e["op"], e["origin"], e["after"].get("phone")) for e in events if e["after"]["code"] == "KH-BOTH"]
    assert both_events == [("c", "sync", None), ("u", "user", "0281")]


async def test_before_is_the_last_image_seen_and_survives_a_restart(module_settings, tmp_path, tenant):
    async with crm_world(module_settings, tmp_path, tenant) as world:
        record_id = world.person_creates("KH1", "Tên đầu")
        capture = world.capture()
        await capture.poll(tenant, "customer")
        world.clock.tick()
        world.person_edits(record_id, account_name="Tên hai", office_email="a@b.vn")
        await capture.poll(tenant, "customer")
        close(capture)  # the service stops; its images stay on disk
        world.clock.tick()
        world.person_edits(record_id, account_name="Tên ba")
        capture = world.capture()
        await capture.poll(tenant, "customer")
        close(capture)
    last = await_events(module_settings, tenant)[-1]
    assert last["op"] == "u" and last["before"]["name"] == "Tên hai" and last["before"]["email"] == "a@b.vn"
    assert last["after"]["name"] == "Tên ba" and last["after"]["email"] == "a@b.vn"


def command(tenant: str, code: str, fields: dict) -> Command:
    event_id = uuid.uuid4().hex
    return Command(
        command_id=command_id(
            tenant=tenant, event_id=event_id, rule="CUS-20", target="crm", entity="customer", op="upsert", key=code
        ),
        tenant=tenant,
        target=System.CRM,
        entity="customer",
        op=Op.UPSERT,
        key=CommandKey(id=None, code=code),
        source=CommandSource(system=System.ACCT, entity="customer", id=f"acct-{code}", event_id=event_id),
        fields=fields,
        rule="CUS-20",
        depends_on=[],
        ts_ms=int(time.time() * 1000),
    )


async def test_an_api_call_that_lands_after_the_next_poll_began_is_still_the_integrations_own(
    module_settings, tmp_path, tenant
):
    """The connector notes a write before calling the API; on a slow API or a loaded host the call can
    land seconds after capture last saw the record. That write is still ours (sync), and once it has
    explained a change it explains no other: a person who later puts the same values back is a person."""
    async with crm_world(module_settings, tmp_path, tenant) as world:
        record_id = world.person_creates("KH-SLOW", "Ban đầu")
        capture = world.capture(page_size=100)
        await capture.poll(tenant, "customer")  # the person's creation, seen now
        noted = world.ledger.note_write

        def noted_long_ago(*args, **kwargs):  # as if the call had taken 30 s since the note
            return noted(*args, **kwargs, now_ms=int(time.time() * 1000) - 30_000)

        world.ledger.note_write = noted_long_ago  # type: ignore[method-assign]
        writer = CrmWriter(world.client, LocalWrites(world.ledger))
        await writer.apply(command(tenant, "KH-SLOW", {"name": "Từ kế toán"}))
        world.ledger.note_write = noted  # type: ignore[method-assign]
        world.clock.tick()
        await capture.poll(tenant, "customer")
        world.person_edits(record_id, account_name="Người sửa")
        world.clock.tick()
        await capture.poll(tenant, "customer")
        world.person_edits(record_id, account_name="Từ kế toán")  # the integration's value, by hand
        world.clock.tick()
        await capture.poll(tenant, "customer")
        close(capture)
    events = await_events(module_settings, tenant)
    names = [(e["op"], e["origin"], e["after"]["name"]) for e in events if e["after"]["code"] == "KH-SLOW"]
    assert names == [
        ("r", "user", "Ban đầu"),  # the first poll: a snapshot
        ("u", "sync", "Từ kế toán"),
        ("u", "user", "Người sửa"),
        ("u", "user", "Từ kế toán"),
    ]


async def test_a_poll_between_two_of_the_integrations_writes_sees_both_as_its_own(module_settings, tmp_path, tenant):
    """The connector writes one record several times in a row (the derived statuses of an order: one
    command per rule), noting each write before its call. Capture can read the record after one call
    landed and before the next: the next write's note is not there yet, and must not make the first
    look like a person's edit (found by the chaos suite: such a read came back as an order edit, SO-2,
    rejected by accounting since the order had been generated). Each write comes out as sync; a
    person's edit after them is still a person's."""
    async with crm_world(module_settings, tmp_path, tenant) as world:
        writer = CrmWriter(world.client, LocalWrites(world.ledger))
        capture = world.capture(page_size=100)
        await capture.poll(tenant, "customer")  # an empty CRM: the snapshot is done
        await writer.apply(command(tenant, "KH-2W", {"name": "Một", "tax_code": "0101"}))
        world.clock.tick()
        await capture.poll(tenant, "customer")  # the creation, ours
        await writer.apply(command(tenant, "KH-2W", {"name": "Hai"}))
        world.clock.tick()
        update = world.client.update

        async def poll_then_update(*args, **kwargs):  # capture reads after the note, before the call lands
            await capture.poll(tenant, "customer")
            world.clock.tick()
            return await update(*args, **kwargs)

        world.client.update = poll_then_update  # type: ignore[method-assign]
        await writer.apply(command(tenant, "KH-2W", {"name": "Ba", "tax_code": "0202"}))
        world.client.update = update  # type: ignore[method-assign]
        world.clock.tick()
        await capture.poll(tenant, "customer")  # the third write, landed
        (record,) = world.store.by_codes(tenant, "Customers", ["KH-2W"])
        world.person_edits(record["id"], account_name="Ba")  # no change: nothing to report
        world.person_edits(record["id"], office_tel="0909")
        world.clock.tick()
        await capture.poll(tenant, "customer")
        close(capture)
    events = [e for e in await_events(module_settings, tenant) if e["after"]["code"] == "KH-2W"]
    assert [(e["op"], e["origin"], e["after"]["name"], e["after"]["tax_code"]) for e in events] == [
        ("c", "sync", "Một", "0101"),
        ("u", "sync", "Hai", "0101"),
        ("u", "sync", "Ba", "0202"),
        ("u", "user", "Ba", "0202"),
    ]
    assert events[-1]["after"]["phone"] == "0909"
