"""Fault injection for the sandboxes: latency, 5xx, 429 with Retry-After, timeouts, dropped connections.

Configured per run (``FaultConfig``, or ``LIENTHONG_SANDBOX_FAULTS`` as JSON for the CLI); a seeded
random generator makes a run repeatable. Only API calls (``/api/...``) are disturbed, never the
login or the page.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import TypeAdapter


@dataclass
class FaultConfig:
    latency_ms: int = 0  # added to every API call
    error_rate: float = 0.0  # answered 503
    throttle_rate: float = 0.0  # answered 429 with Retry-After
    retry_after_s: float = 0.2
    timeout_rate: float = 0.0  # held for timeout_s before answering 504 (the client should have given up)
    timeout_s: float = 5.0
    drop_rate: float = 0.0  # the connection is closed without an answer
    callback_drop_rate: float = 0.0  # accounting: a callback is not delivered (kept for get_call_back_detail_error)
    seed: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # what was injected, for tests and the demo
    in_flight: int = 0  # API calls being answered now, and the most seen at once
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def drop_callback(self) -> bool:
        if self.callback_drop_rate and self._random.random() < self.callback_drop_rate:
            self.counts["callback_drop"] = self.counts.get("callback_drop", 0) + 1
            return True
        return False

    def draw(self) -> str | None:
        roll = self._random.random()
        for kind, rate in (
            ("drop", self.drop_rate),
            ("timeout", self.timeout_rate),
            ("error", self.error_rate),
            ("throttle", self.throttle_rate),
        ):
            if roll < rate:
                self.counts[kind] = self.counts.get(kind, 0) + 1
                return kind
            roll -= rate
        return None


# What a run configures; the other fields are what the sandbox counts while it runs.
SETTABLE = (
    "latency_ms",
    "error_rate",
    "throttle_rate",
    "retry_after_s",
    "timeout_rate",
    "timeout_s",
    "drop_rate",
    "callback_drop_rate",
    "seed",
)
_FAULT_CONFIG = TypeAdapter(FaultConfig)


def fault_config(values: Mapping[str, object]) -> FaultConfig:
    """A ``FaultConfig`` from settings (``LIENTHONG_SANDBOX_FAULTS``), each value checked against its
    field's type. Raises ``ValueError`` (pydantic's ``ValidationError`` is one) naming an unknown key
    or a wrong value."""
    unknown = sorted(set(values) - set(SETTABLE))
    if unknown:
        raise ValueError(f"unknown fault setting(s) {', '.join(unknown)}; known: {', '.join(SETTABLE)}")
    return _FAULT_CONFIG.validate_python(dict(values))


def fault_middleware(config: FaultConfig, applies: Callable[[str], bool] | None = None) -> Callable:
    """Disturb the requests whose path ``applies`` (default: ``/api/...``); never the page or sandbox controls."""
    disturb = applies or (lambda path: path.startswith("/api/"))

    @web.middleware
    async def faults(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if not disturb(request.path):
            return await handler(request)
        config.in_flight += 1
        config.max_in_flight = max(config.max_in_flight, config.in_flight)
        try:
            return await disturbed(request, handler)
        finally:
            config.in_flight -= 1

    async def disturbed(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        kind = config.draw()
        if kind == "drop":
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable()  # never reaches the client: the connection is gone
        if kind == "timeout":
            await asyncio.sleep(config.timeout_s)
            return web.json_response({"Success": False, "ErrorMessage": "injected timeout"}, status=504)
        if kind == "error":
            return web.json_response({"Success": False, "ErrorMessage": "injected 503"}, status=503)
        if kind == "throttle":
            return web.json_response(
                {"Success": False, "ErrorMessage": "injected 429"},
                status=429,
                headers={"Retry-After": f"{config.retry_after_s:g}"},
            )
        return await handler(request)

    return faults
