"""CRM capture against each answer the reference allows where it leaves the real CRM open (amis-apis.md
§1.4, Part 5), the sandbox switched to it (``LIENTHONG_SANDBOX_CRM_ANSWERS``), and the real broker.

* The first page is 0 or 1: whichever, every record is reported once, the newest included (a capture
  that started at page 1 of a 0-based CRM would skip the newest page of every resource for ever).
* Deleted rows leave the lists, or stay in them with ``is_deleted``: either way the deletion is
  reported once, with the last image as ``before``, and the code created again is a new record.
"""

from __future__ import annotations

from collections import Counter

import pytest

from amis.ledger import LocalWrites
from capture.crm import CrmCapture
from connectors.writers import CrmWriter
from sandboxes.settings import CrmAnswers
from tests.capture.test_crm_capture import CUSTOMERS, PERSON, await_events, close, command, crm_world

pytestmark = pytest.mark.broker

FIRST_PAGES = [
    pytest.param(CrmAnswers(first_page=0), id="first-page-0"),
    pytest.param(CrmAnswers(first_page=1, page_zero="page_one"), id="first-page-1-page-0-is-page-1"),
    pytest.param(CrmAnswers(first_page=1, page_zero="empty"), id="first-page-1-page-0-empty"),
    pytest.param(CrmAnswers(first_page=1, page_zero="refused"), id="first-page-1-page-0-refused"),
]


@pytest.mark.parametrize("answers", FIRST_PAGES)
async def test_every_record_is_captured_once_whatever_the_first_page(
    module_settings, tmp_path, tenant, answers: CrmAnswers
) -> None:
    async with crm_world(module_settings, tmp_path, tenant, answers) as world:
        ids = []
        for n in range(7):
            ids.append(world.person_creates(f"KH{n}", f"Khách {n}"))
            world.clock.tick()
        capture = world.capture(page_size=3, overlap_s=0)
        assert await capture.poll(tenant, "customer") == 7
        for n in range(7, 11):  # four newer ones (a page and more) and an edit of the oldest
            world.person_creates(f"KH{n}", f"Khách {n}")
            world.clock.tick()
        world.person_edits(ids[0], account_name="Sửa")
        world.clock.tick()
        assert await capture.poll(tenant, "customer") == 5
        assert await capture.poll(tenant, "customer") == 0
        close(capture)
    events = await_events(module_settings, tenant)
    by_code = Counter((e["after"]["code"], e["op"]) for e in events)
    assert by_code == Counter(
        {**{(f"KH{n}", "r"): 1 for n in range(7)}, **{(f"KH{n}", "c"): 1 for n in range(7, 11)}, ("KH0", "u"): 1}
    )
    assert len({e["event_id"] for e in events}) == len(events)


@pytest.mark.parametrize("deleted_rows", ["dropped", "listed"])
async def test_a_deletion_is_reported_once_whether_deleted_rows_leave_the_lists_or_stay(
    module_settings, tmp_path, tenant, deleted_rows: str
) -> None:
    async with crm_world(module_settings, tmp_path, tenant, CrmAnswers(deleted_rows=deleted_rows)) as world:
        keep = world.person_creates("KH1", "Còn lại")
        gone = world.person_creates("KH2", "Sẽ xoá")
        capture: CrmCapture = world.capture(page_size=100)
        await capture.poll(tenant, "customer")
        world.clock.tick()
        world.person_edits(gone, account_name="Tên cuối cùng")
        world.clock.tick()
        await capture.poll(tenant, "customer")
        world.clock.tick()
        # a person deletes it in CRM's screens; the sandbox keeps the row listed, or drops it
        assert world.store.delete(tenant, CUSTOMERS, gone, PERSON, keep=deleted_rows == "listed")
        world.clock.tick()
        # a row listed as deleted is a deletion the next poll reads; a dropped one waits for the full listing
        assert await capture.poll(tenant, "customer") == (1 if deleted_rows == "listed" else 0)
        await capture.scan_deletions(tenant, "customer")
        await capture.poll(tenant, "customer")
        await capture.scan_deletions(tenant, "customer")  # reported already: nothing more
        # accounting sends the code again: a new CRM record, the integration's
        await CrmWriter(world.client, LocalWrites(world.ledger)).apply(
            command(tenant, "KH2", {"name": "Lại từ kế toán"})
        )
        world.clock.tick()
        await capture.poll(tenant, "customer")
        await capture.scan_deletions(tenant, "customer")
        close(capture)
    events = await_events(module_settings, tenant)
    of_gone = [
        (e["op"], (e["after"] or e["before"])["name"]) for e in events if (e["after"] or e["before"])["id"] == str(gone)
    ]
    assert of_gone == [("r", "Sẽ xoá"), ("u", "Tên cuối cùng"), ("d", "Tên cuối cùng")]
    (deletion,) = [e for e in events if e["op"] == "d"]
    assert deletion["after"] is None and deletion["origin"] == "user"
    (again,) = [e for e in events if e["op"] == "c"]
    assert again["after"]["code"] == "KH2" and again["after"]["id"] != str(gone) and again["origin"] == "sync"
    assert [e["op"] for e in events if (e["after"] or e["before"])["id"] == str(keep)] == ["r"]
