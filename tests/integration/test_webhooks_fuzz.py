"""Hostile requests to the webhook receiver, generated: every one is answered 4xx (never 5xx, never a
hung connection) and none produces anything to the real broker."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.webhooks import create_webhooks, webhook_signature
from common.kafka_config import confluent_config
from common.metrics import bound_port

pytestmark = pytest.mark.broker

SECRET = "whsec"
BODY_TIMEOUT_S = 0.3
TENANT = f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def port(module_settings, tmp_path_factory) -> Iterator[int]:
    """The receiver served from a thread of its own, so hypothesis drives it with plain sockets."""
    loop = asyncio.new_event_loop()
    app = create_webhooks(
        secrets={("crm", TENANT): SECRET},
        kafka=confluent_config(module_settings.kafka),
        topic_prefix=module_settings.kafka.topic_prefix,
        data_dir=tmp_path_factory.mktemp("webhooks"),
        body_timeout_s=BODY_TIMEOUT_S,
    )
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield bound_port(runner)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def send(port: int, headers: dict[bytes, bytes], body: bytes, declared: int | None = None) -> int:
    """A raw HTTP request (headers as bytes: anything a client can put on the wire); the status answered."""
    head = b"POST /webhooks/crm/" + TENANT.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Content-Length: " + str(len(body) if declared is None else declared).encode() + b"\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed without an answer ({answer!r})"
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def signed(body: bytes) -> dict[bytes, bytes]:
    now = str(int(time.time()))
    return {b"X-Timestamp": now.encode(), b"X-Signature": webhook_signature(SECRET, now, body).encode()}


GOOD = {
    "event_id": "wh-good",
    "entity": "customer",
    "op": "u",
    "ts_ms": 1_764_201_600_000,
    "before": None,
    "after": {"id": 5, "account_number": "KH0005", "account_name": "Khách"},
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# a value that each field of a webhook cannot take
WRONG = {
    "event_id": JSON.filter(lambda v: not isinstance(v, str)) | st.just(""),
    "entity": JSON.filter(lambda v: v not in ("customer", "product", "order")),
    "op": JSON.filter(lambda v: v not in ("c", "u", "d")),
    "ts_ms": JSON.filter(lambda v: type(v) is not int or v <= 0),
    "after": JSON.filter(lambda v: not isinstance(v, dict) and v is not None) | st.none(),
}
HUGE = b'{"event_id": "' + b"x" * (2 * 1024 * 1024) + b'"}'


@st.composite
def hostile(draw) -> tuple[dict[bytes, bytes], bytes, int | None]:
    kind = draw(st.sampled_from(["field", "missing", "record id", "body", "truncated json", "headers", "huge", "slow"]))
    payload = dict(GOOD, event_id=f"wh-{draw(st.uuids())}")
    if kind == "field":
        name = draw(st.sampled_from(sorted(WRONG)))
        payload[name] = draw(WRONG[name])
    elif kind == "missing":
        del payload[draw(st.sampled_from(["event_id", "entity", "op", "ts_ms", "after"]))]
    elif kind == "record id":  # the record's id or code not a bounded string or integer
        field = draw(st.sampled_from(["id", "account_number"]))
        value = draw(
            JSON.filter(lambda v: isinstance(v, (list, dict, bool, float)) or v == "" or (v is None and field == "id"))
        )
        payload["after"] = dict(payload["after"], **{field: value})
    body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    if kind == "body":
        body = draw(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
    elif kind == "truncated json":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif kind == "huge":
        body = HUGE
    headers = signed(body)
    if kind == "headers":
        header = draw(st.sampled_from([b"X-Timestamp", b"X-Signature"]))
        headers[header] = draw(
            st.sampled_from([b"nan", b"inf", b"-1", b"1e10", "\u0661\u0662".encode(), "sha256=é".encode(), b"9" * 9000])
            | st.binary(max_size=80).filter(lambda v: b"\r" not in v and b"\n" not in v)
        )
    if kind == "slow":  # declares more than it sends, then waits: cut off by the body timeout
        return headers, body[:10], len(body)
    return headers, body, None


def test_hostile_requests_are_answered_4xx_and_produce_nothing(port, kafka):
    answers: list[int] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hostile())
    def answer(request: tuple[dict[bytes, bytes], bytes, int | None]) -> None:
        status = send(port, *request)
        answers.append(status)
        assert 400 <= status < 500, f"{status} for {request!r:.300}"

    answer()
    assert {408, 413, 401, 400} <= set(answers)  # the generator reached every kind of refusal

    # a good webhook last: once it is on the topic, anything a bad one had produced would be before it
    body = orjson.dumps(GOOD)
    assert send(port, signed(body), body) == 202
    messages = kafka.read(["cdc.crm.customer"], until=lambda ms: any(m["key"] == f"{TENANT}:5" for m in ms))
    assert [m["value"]["event_id"] for m in messages if m["key"].startswith(f"{TENANT}:")] == ["wh-good"]
