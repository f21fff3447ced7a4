"""Trust no caller of the accounting capture's callback URL (issue 23), on the real broker.

ACT signs only ``data``, with the app_id every company of the app shares and that ACT sends in clear in
every callback: whoever saw one callback can sign any. So:

* a callback is bound to its company by the URL registered with MISA for it (``/callback/<secret>``),
  and its ``org_company_code`` must be that company's; the shared ``/callback`` takes nothing;
* no replay changes anything: every callback type (1, 2, 18, 22 added / edited / posted / unposted /
  deleted) delivered again, late or out of order leaves each record at its newest version and
  produces nothing more; a deletion is not undone by an older version;
* whatever comes is answered as ACT expects (HTTP 200, ``Success``, ``ErrorCode``, one line), item by
  item in a batch, and a fuzz drives the URL with hostile headers and bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from amis.acct_client import ActClient, ActCredentials, callback_signature
from amis.ledger import CallbackOutcome, WriteLedger
from capture.acct import ActCapture
from capture.state import CaptureState, ChangeReporter, new_producer
from common.kafka_config import confluent_config
from common.names import System
from streams.settings import WorkerSettings
from tests.capture.conftest import events_of

pytestmark = pytest.mark.broker

APP_ID = "app-trust-test"  # shared by every company, sent in clear: no secret of anyone's
COMPANY = {"a": "0101000001", "b": "0101000002"}
VOUCHER_ENTITIES = ("receipt", "sale_order")


@dataclass
class Two:
    tenants: dict[str, str]  # "a" / "b" -> tenant
    capture: ActCapture
    ledger: WriteLedger
    receiver: TestServer
    session: aiohttp.ClientSession
    settings: WorkerSettings

    def url(self, which: str) -> str:
        return str(self.receiver.make_url(str(self.capture.callback_path(self.tenants[which]))))

    async def post(self, url: str, body: Any) -> dict[str, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(url, data=data, headers={"Content-Type": "application/json"}) as answer:
            assert answer.status == 200, await answer.text()  # ACT expects 200 always
            said = await answer.json()
        assert set(said) == {"Success", "ErrorCode", "ErrorMessage", "Data"}
        if said["Success"] is False:
            assert said["ErrorCode"] and "\n" not in said["ErrorMessage"], said
        return said

    def events(self, which: str, entity: str) -> list[dict[str, Any]]:
        return events_of(self.settings.kafka, f"cdc.acct.{entity}", self.tenants[which])


@contextlib.asynccontextmanager
async def two_companies(module_settings: WorkerSettings, tmp_path: Path, tenant: str) -> AsyncIterator[Two]:
    tenants = {"a": f"{tenant}-a", "b": f"{tenant}-b"}
    ledger = WriteLedger(tmp_path / "acct-shared.sqlite")
    creds = {tenants[w]: ActCredentials(SecretStr("acc3ss"), COMPANY[w]) for w in tenants}
    capture = ActCapture(
        ActClient("http://unused", None, APP_ID, creds),  # type: ignore[arg-type]  # the receiver calls nothing
        ChangeReporter(
            System.ACCT,
            CaptureState(tmp_path / "acct-capture.sqlite"),
            ledger,
            new_producer(confluent_config(module_settings.kafka)),
            topic_prefix=module_settings.kafka.topic_prefix,
        ),
        ledger,
        {tenants[w]: COMPANY[w] for w in tenants},
        callback_secrets={tenants[w]: SecretStr(f"secret-of-{w}-" + "x" * 24) for w in tenants},
    )
    receiver = TestServer(capture.callback_app())
    await receiver.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Two(tenants, capture, ledger, receiver, session, module_settings)
    finally:
        await session.close()
        await receiver.close()
        capture.reporter.producer.flush(10)
        capture.reporter.state.close()
        ledger.close()


def signed(data_type: int, items: Any, company: str, *, key: str = APP_ID) -> dict[str, Any]:
    """A callback as ACT sends it."""
    data = items if isinstance(items, str) else orjson.dumps(items).decode()
    return {
        "success": True,
        "error_code": None,
        "error_message": None,
        "signature": callback_signature(data, key),
        "data_type": data_type,
        "data": data,
        "org_company_code": company,
        "app_id": APP_ID,
    }


def receipt(refid: str, amount: int, at: str, state: int | None = None, **more: Any) -> dict[str, Any]:
    item = {"refid": refid, "refno": f"PT-{refid}", "voucher_type": 5, "total_amount": amount, "modified_date": at}
    if state is not None:
        item["custom_param"] = {"ModelState": state}
    return {**item, **more}


async def test_a_callback_is_bound_to_the_company_of_its_url(module_settings, tmp_path, tenant):
    async with two_companies(module_settings, tmp_path, tenant) as two:
        a_receipt = signed(22, [receipt("PT-1", 100, "2026-01-05T10:00:00+07:00", 1)], COMPANY["a"])
        # a's callback, its org_company_code changed to b's and not signed again (the signature covers data
        # only): refused at a's URL, and b's URL is b's secret
        moved = {**a_receipt, "org_company_code": COMPANY["b"]}
        said = await two.post(two.url("a"), moved)
        assert (said["Success"], said["ErrorCode"]) == (False, "InvalidParam")
        assert "org_company_code" in said["ErrorMessage"]
        # the shared /callback names no company, a guessed secret none either: nothing taken there
        for url in (two.receiver.make_url("/callback"), two.receiver.make_url("/callback/" + "y" * 30)):
            said = await two.post(str(url), moved)
            assert (said["Success"], said["ErrorCode"]) == (False, "InvalidParam")
        # the right URL for the company the callback names is taken
        assert (await two.post(two.url("a"), a_receipt))["Success"] is True
        # a save result reaches only its company's wait, though both chose the same org_refid
        waits = {w: two.ledger.expect_callback(two.tenants[w], "ref-same", 1, f"cmd-{w}") for w in ("a", "b")}
        result = signed(1, [{"org_refid": "ref-same", "success": True, "session_id": "s1"}], COMPANY["a"])
        assert (await two.post(two.url("a"), result))["Success"] is True
        assert two.ledger.callback_outcome(waits["a"]) == CallbackOutcome(True, None, None)
        assert two.ledger.callback_outcome(waits["b"]) is None
        # b's own result, to b's URL, settles b's
        result_b = signed(1, [{"org_refid": "ref-same", "success": False, "error_code": "X"}], COMPANY["b"])
        assert (await two.post(two.url("b"), result_b))["Success"] is True
        assert two.ledger.callback_outcome(waits["b"]) == CallbackOutcome(False, "X", None)
        assert two.events("b", "receipt") == []
        (taken,) = two.events("a", "receipt")
    assert taken["after"]["amount"] == "100"


def changes(history: list[int | None], arrivals: list[int]) -> int:
    """The model: how many of the arrivals (indexes into ``history``, the amount of each version, oldest
    first; None: deleted) change the record. Only a version newer than every one taken before, and
    different from the record as held, changes it; nothing after the deletion does."""
    count, newest, held, deleted = 0, -1, None, False
    for n in arrivals:
        if n <= newest or deleted:
            continue
        newest = n
        if history[n] is None:
            deleted = True
            count += held is not None  # a record never seen: only a tombstone
        elif history[n] != held:
            held = history[n]
            count += 1
    return count


async def test_no_replay_of_any_callback_type_changes_anything(module_settings, tmp_path, tenant):
    """Every type: 18 (generated), 22 added / edited / posted / unposted / deleted, delivered, then again
    late and out of order: each record ends at its newest version, and only newer versions made events."""
    company = COMPANY["a"]
    # one receipt's life in 22s, oldest first: (ModelState, modified_date, amount or None for deleted)
    life = [(1, "10:00:00", 100), (2, "10:01:00", 200), (7, "10:02:00", 200), (8, "10:03:00", 250)]
    rng = random.Random(23)
    async with two_companies(module_settings, tmp_path, tenant) as two:
        url = two.url("a")
        expected: dict[str, int] = {}
        for case in range(5):
            refid = f"R{case}"
            amounts: list[int | None] = [amount for _, _, amount in life] + [None]
            bodies = [
                signed(22, [receipt(refid, amount, f"2026-01-05T{at}+07:00", state)], company)
                for state, at, amount in life
            ]
            # ACT's deletion carries the voucher as it was: its last modified_date
            bodies.append(signed(22, [receipt(refid, 250, "2026-01-05T10:03:00+07:00", 3)], company))
            arrivals = list(range(len(bodies)))
            # case 0 in order; the others scrambled; then every one again, scrambled
            first = arrivals if case == 0 else rng.sample(arrivals, len(arrivals))
            arrivals = first + rng.sample(arrivals, len(arrivals))
            expected[refid] = changes(amounts, arrivals)
            for n in arrivals:
                assert (await two.post(url, bodies[n]))["Success"] is True
        # 18: a generated order, then the accountant edits it (22); the 18 again, late, changes nothing
        generated = {"org_refid": "DH-1", "refno": "DH0001", "voucher_type": 20, "total_amount": 1000}
        g18 = signed(18, [{**generated, "modified_date": "2026-01-05T11:00:00+07:00"}], company)
        g22 = signed(
            22,
            [
                {
                    **generated,
                    "refid": "DH-1",
                    "total_amount": 1500,
                    "modified_date": "2026-01-05T11:05:00+07:00",
                    "custom_param": {"ModelState": 2},
                }
            ],
            company,
        )
        for body in (g18, g22, g18, g22):
            assert (await two.post(url, body))["Success"] is True
        # another: the edit (22) comes before its generation (18), which is older and changes nothing
        late = {**generated, "org_refid": "DH-2"}
        for body in (
            signed(
                22,
                [
                    {
                        **late,
                        "refid": "DH-2",
                        "total_amount": 1500,
                        "modified_date": "2026-01-05T11:05:00+07:00",
                        "custom_param": {"ModelState": 2},
                    }
                ],
                company,
            ),
            signed(18, [{**late, "modified_date": "2026-01-05T11:00:00+07:00"}], company),
        ):
            assert (await two.post(url, body))["Success"] is True
        # a replay of a 22 edit signed anew with a changed amount is a different callback, but an older version
        stale = signed(22, [receipt("R0", 999, "2026-01-05T10:01:30+07:00", 2)], company)
        assert (await two.post(url, stale))["Success"] is True  # taken: nothing to change
        # 1 and 2: results replayed after a new wait for the same proposal settle nothing
        first = two.ledger.expect_callback(two.tenants["a"], "ref-9", 1, "cmd-1")
        saved = signed(1, [{"org_refid": "ref-9", "success": True, "session_id": "s-1"}], company)
        deleted = signed(2, [{"org_refid": "ref-9", "success": True, "session_id": "s-2"}], company)
        assert (await two.post(url, saved))["Success"] is True
        assert two.ledger.callback_outcome(first) == CallbackOutcome(True, None, None)
        again = two.ledger.expect_callback(two.tenants["a"], "ref-9", 1, "cmd-2")
        gone = two.ledger.expect_callback(two.tenants["a"], "ref-9", 2, "cmd-3")
        assert (await two.post(url, deleted))["Success"] is True
        for body in (saved, deleted, saved):
            assert (await two.post(url, body))["Success"] is True
        assert two.ledger.callback_outcome(again) is None  # the old save result did not settle the new save
        assert two.ledger.callback_outcome(gone) == CallbackOutcome(True, None, None)
        receipts, orders_events = two.events("a", "receipt"), two.events("a", "sale_order")
    for refid, count in expected.items():
        mine = [e for e in receipts if (e["after"] or e["before"])["id"] == refid]
        assert len(mine) == count, (refid, count, [e["op"] for e in mine])
        assert [e["ts_ms"] for e in mine] == sorted(e["ts_ms"] for e in mine)  # never an older version
        assert not mine or mine[-1]["op"] == "d"  # ends deleted, as its newest version is; nothing brought it back
        assert all(e["op"] != "c" for e in mine[1:])
    r0 = [e for e in receipts if (e["after"] or e["before"])["id"] == "R0"]
    assert [e["op"] for e in r0] == ["c", "u", "u", "d"]  # posting changes nothing canonical: no event
    # two records: each in its own order (they may be on different partitions)
    assert sorted((e["after"]["id"], e["op"], e["after"]["total_amount"]) for e in orders_events) == [
        ("DH-1", "c", "1000"),
        ("DH-1", "u", "1500"),
        ("DH-2", "c", "1500"),
    ]


async def test_a_deletion_that_comes_first_is_not_undone_by_the_older_creation(module_settings, tmp_path, tenant):
    async with two_companies(module_settings, tmp_path, tenant) as two:
        company = COMPANY["a"]
        created = signed(22, [receipt("R-late", 100, "2026-01-05T10:00:00+07:00", 1)], company)
        removed = signed(22, [receipt("R-late", 100, "2026-01-05T10:00:00+07:00", 3)], company)
        for body in (removed, created):
            assert (await two.post(two.url("a"), body))["Success"] is True
        assert two.events("a", "receipt") == []  # never alive as far as anyone downstream knows


async def test_every_malformed_callback_is_answered_and_a_batch_keeps_its_good_items(module_settings, tmp_path, tenant):
    async with two_companies(module_settings, tmp_path, tenant) as two:
        url, company, at = two.url("a"), COMPANY["a"], "2026-01-05T10:00:00+07:00"
        good = signed(22, [receipt("OK", 1, at, 1)], company)
        whole = [
            {**good, "signature": "chữ ký không phải hex ✓"},  # non-ASCII signature
            {**good, "signature": "\x00" * 64},
            {**good, "data": orjson.loads(good["data"])},  # data not a JSON string
            {**good, "data_type": "abc"},
            {**good, "data_type": None},
            signed(22, "not json", company),
            signed(22, "42", company),  # not a list
            signed(22, '{"refid": ', company),
            [good],
            "a string",
        ]
        for body in whole:
            said = await two.post(url, body)
            assert (said["Success"], said["ErrorCode"]) == (False, "InvalidParam"), body
        for raw in (b"", b"{", orjson.dumps(good)[:-7], b"\xff\xfe\x00", b"null"):
            said = await two.post(url, raw)
            assert (said["Success"], said["ErrorCode"]) == (False, "InvalidParam"), raw
        batch = [
            receipt("B1", 10, at, 1),
            receipt("B2", 20, at, 1, voucher_type="abc"),
            receipt("B3", 30, "not-a-date", 1),
            "not an object",
            receipt("B5", 50, at, 99),  # no such ModelState
            {**receipt("B6", 60, at, 1), "refid": {"x": 1}},
            receipt("B7", 70, at, 1),
        ]
        said = await two.post(url, signed(22, batch, company))
        assert (said["Success"], said["ErrorCode"]) == (False, "InvalidParam")
        refused = said["ErrorMessage"]
        for n in (2, 3, 4, 5, 6):
            assert f"item {n}:" in refused, refused
        assert "item 1:" not in refused and "item 7:" not in refused
        assert "voucher_type 'abc'" in refused and "modified_date 'not-a-date'" in refused
        results = [{"org_refid": "ok-1", "success": True}, {"org_refid": 5, "success": True}, {"success": "yes"}]
        waited = two.ledger.expect_callback(two.tenants["a"], "ok-1", 1, "cmd")
        said = await two.post(url, signed(1, results, company))
        assert said["Success"] is False and "item 2:" in said["ErrorMessage"] and "item 3:" in said["ErrorMessage"]
        assert two.ledger.callback_outcome(waited) == CallbackOutcome(True, None, None)
        taken = two.events("a", "receipt")
    assert sorted(e["after"]["id"] for e in taken) == ["B1", "B7"]


# --- the fuzz: hostile headers and bodies ------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
BAD_FIELDS = [
    ("voucher_type", "abc"),
    ("voucher_type", [5]),
    ("modified_date", "not-a-date"),
    ("modified_date", 12),
    ("refid", 7),
    ("refid", ""),
]
BAD_STATES = [("custom_param", {"ModelState": 99}), ("custom_param", "1"), ("custom_param", {"ModelState": "2"})]


@st.composite
def hostile_items(draw: st.DrawFn, data_type: int) -> list[Any]:
    """Items of a synced voucher type each with one field wrong (or no object at all)."""
    bad_field = st.sampled_from(BAD_FIELDS + (BAD_STATES if data_type == 22 else []))
    items: list[Any] = []
    for n in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            items.append(
                draw(st.none() | st.text(max_size=10) | st.integers(-9, 9) | st.lists(st.integers(-9, 9), max_size=2))
            )
            continue
        name, value = draw(bad_field)
        extra = draw(st.dictionaries(st.sampled_from(["refno", "total_amount", "x"]), JSONISH, max_size=2))
        items.append({**receipt(f"F{n}", 1, "2026-01-05T10:00:00+07:00", 1), **extra, name: value})
    return items


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], int]:
    """(body, headers, how many items are wrong when they are what is wrong); every one must be refused."""
    kind = draw(st.sampled_from(["bytes", "json", "forged", "company", "items", "types"]))
    headers = draw(
        st.dictionaries(
            st.sampled_from(["Content-Type", "X-Forwarded-For", "X-MISA-Signature", "User-Agent", "Accept"]),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            max_size=3,
        )
    )
    good_items = [receipt("G", 1, "2026-01-05T10:00:00+07:00", 1)]
    if kind == "bytes":
        return draw(st.binary(max_size=200)), headers, 0
    if kind == "json":
        return orjson.dumps(draw(JSONISH)), headers, 0
    if kind == "forged":  # signed with a wrong key, or a signature of any characters
        body = signed(22, good_items, COMPANY["a"], key=draw(st.text(min_size=1, max_size=20)))
        if draw(st.booleans()):
            body["signature"] = draw(st.text(max_size=80))
        return orjson.dumps(body), headers, 0
    if kind == "company":  # signed right, another company (or none)
        other = draw(st.sampled_from([COMPANY["b"], "", None, 101000001, [COMPANY["a"]]]))
        return orjson.dumps({**signed(22, good_items, COMPANY["a"]), "org_company_code": other}), headers, 0
    if kind == "types":  # the envelope's types wrong
        body = signed(22, good_items, COMPANY["a"])
        name = draw(st.sampled_from(["data", "data_type"]))
        body[name] = draw(JSONISH.filter(lambda v: not isinstance(v, (str, int)) or isinstance(v, bool)))
        return orjson.dumps(body), headers, 0
    data_type = draw(st.sampled_from([18, 22]))
    items = draw(hostile_items(data_type))
    return orjson.dumps(signed(data_type, items, COMPANY["a"])), headers, len(items)


def post_blocking(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"body": exc.read()[:300].decode(errors="replace")}


async def test_fuzz_hostile_headers_and_bodies_are_answered_and_produce_nothing(module_settings, tmp_path, tenant):
    async with two_companies(module_settings, tmp_path, tenant) as two:
        url = two.url("a")
        failures: list[str] = []
        lock = threading.Lock()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(hostile_requests())
        def fuzz(request: tuple[bytes, dict[str, str], int]) -> None:
            body, headers, items_wrong = request
            status, said = post_blocking(url, body, headers)
            ok = (
                status == 200
                and said.get("Success") is False
                and isinstance(said.get("ErrorCode"), str)
                and isinstance(said.get("ErrorMessage"), str)
                and "\n" not in said["ErrorMessage"]
                and all(f"item {n}:" in said["ErrorMessage"] for n in range(1, items_wrong + 1))
            )
            if not ok:
                with lock:
                    failures.append(f"{body[:200]!r} {headers} -> {status} {said}")
            assert ok, failures[-1]

        await asyncio.to_thread(fuzz)
        # a good one still goes through, and it is the only thing produced
        good = signed(22, [receipt("after-fuzz", 5, "2026-01-05T10:00:00+07:00", 1)], COMPANY["a"])
        assert (await two.post(url, good))["Success"] is True
        produced = {entity: two.events("a", entity) for entity in VOUCHER_ENTITIES}
    assert not failures
    assert [e["after"]["id"] for e in produced["receipt"]] == ["after-fuzz"] and produced["sale_order"] == []
