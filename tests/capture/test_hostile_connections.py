"""Hostile connections to the project's HTTP listeners (the webhook receiver, a service's probes):
slow bodies are cut off within the body timeout, and resets and malformed messages are one log line
each, never a traceback."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

import pytest
from aiohttp import web

from capture.webhooks import create_webhooks
from common import listeners, metrics
from common.kafka_config import confluent_config

pytestmark = pytest.mark.broker

TIMEOUT_S = 0.5
SLOW, RESETS, MALFORMED = 600, 150, 50


async def slow_body(port: int, path: bytes) -> tuple[bytes, float]:
    """Headers promising 1000 bytes, 5 sent, then wait: the status line answered and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(b"POST " + path + b' HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"eve')
    await writer.drain()
    status = await reader.readline()
    await reader.read()  # and the connection is closed, not kept for the rest of the body
    writer.close()
    return status, time.monotonic() - start


async def reset_mid_body(port: int, path: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST " + path + b' HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"eve')
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()  # RST, as a client that gives up or crashes


async def malformed_chunks(port: int, path: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n")
    await writer.drain()
    status = await reader.readline()
    writer.close()
    return status


async def served(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = listeners.app_runner(app)  # as every service serves an application: guarded
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
    return runner, metrics.bound_port(runner)


def connection_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in ("common.listeners", "aiohttp.server")]


async def test_slow_resetting_and_malformed_clients_are_cut_off_and_logged_in_one_line_each(
    module_settings, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    app = create_webhooks(
        secrets={("crm", "t1"): "whsec"},
        kafka=confluent_config(module_settings.kafka),
        data_dir=tmp_path,
        body_timeout_s=TIMEOUT_S,
    )
    runner, port = await served(app)
    path = b"/webhooks/crm/t1"
    try:
        start = time.monotonic()
        slow = asyncio.gather(*(slow_body(port, path) for _ in range(SLOW)))
        resets = asyncio.gather(*(reset_mid_body(port, path) for _ in range(RESETS)))
        malformed = asyncio.gather(*(malformed_chunks(port, path) for _ in range(MALFORMED)))
        answers, _, bad = await asyncio.wait_for(asyncio.gather(slow, resets, malformed), 30)
        elapsed = time.monotonic() - start
        await asyncio.sleep(0.2)  # the server's side of the resets
    finally:
        await runner.cleanup()

    assert {status.split(b" ")[1] for status, _ in answers} == {b"408"}
    assert {status.split(b" ")[1] for status in bad} == {b"400"}
    # each answered and closed at the timeout (give or take opening 800 connections on a busy machine),
    # not after aiohttp's 10 s of lingering for the rest of the body
    assert max(seconds for _, seconds in answers) < TIMEOUT_S + 3 and elapsed < 8
    logged = connection_logs(caplog)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in logged)
    assert sum("did not arrive whole" in r.getMessage() for r in logged) == SLOW
    assert sum("ConnectionResetError" in r.getMessage() for r in logged) == RESETS
    assert sum("BadHttpMessage" in r.getMessage() for r in logged) == MALFORMED
    assert len(logged) == SLOW + RESETS + MALFORMED


async def test_the_probes_of_every_service_have_the_same_body_timeout(monkeypatch, caplog):
    """``serve_health`` (connectors, worker, CRM capture): a slow body there is cut off too."""
    monkeypatch.setattr(listeners, "BODY_TIMEOUT_S", TIMEOUT_S)
    runner = await metrics.serve_health("127.0.0.1", 0)
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(slow_body(metrics.bound_port(runner), b"/healthz") for _ in range(50))), 20
        )
    finally:
        await runner.cleanup()
    assert {status.split(b" ")[1] for status, _ in answers} == {b"408"}
    assert max(seconds for _, seconds in answers) < TIMEOUT_S + 3


async def test_a_bug_of_ours_keeps_its_traceback(caplog):
    """Only a client's faults lose their traceback: a handler that fails is still logged whole."""

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a bug")

    app = metrics.add_health_routes(web.Application())
    app.router.add_get("/broken", broken)
    runner, port = await served(app)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        status = await reader.readline()
        writer.close()
    finally:
        await runner.cleanup()
    assert status.split(b" ")[1] == b"500"
    assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in connection_logs(caplog))


async def test_an_oversized_body_trickled_in_is_answered_413_and_cut_off(module_settings, tmp_path, caplog):
    """Past aiohttp's 1 MiB the answer is 413 at once, not after lingering for the rest of the body."""
    app = create_webhooks(
        secrets={("crm", "t1"): "whsec"},
        kafka=confluent_config(module_settings.kafka),
        data_dir=tmp_path,
        body_timeout_s=TIMEOUT_S * 20,
    )
    runner, port = await served(app)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        writer.write(b"POST /webhooks/crm/t1 HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n")
        writer.write(b"x" * (1024**2 + 10))  # past the limit, and the rest promised never comes
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        await asyncio.wait_for(reader.read(), 5)  # closed
        elapsed = time.monotonic() - start
        writer.close()
    finally:
        await runner.cleanup()
    assert status.split(b" ")[1] == b"413" and elapsed < 3
    assert any("too large" in r.getMessage() for r in connection_logs(caplog))
