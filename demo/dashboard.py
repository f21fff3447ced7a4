"""The demo's page: the operator's page (``streams/dashboard``, docs/dashboard.md) over the demo's
broker, with what only the demo knows at ``GET /health.json``: each in-process connector's counts,
the faults the sandboxes injected and the events each capture service produced.

The connectors and capture services run in the demo's process, so the page counts this process's
metrics as well as the worker's ``/metrics``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from common.settings import KafkaSettings
from demo.local import LocalSystems
from ops.dashboard.collect import DashboardData
from ops.dashboard.web import DATA, create_dashboard

SYSTEMS = web.AppKey("systems", LocalSystems)


def broker_numbers(kafka: KafkaSettings) -> dict[str, Any]:
    """Messages written per contract topic, and lag per consumer group over the contract's topics."""
    sample = DashboardData(kafka).sample_now()
    return {"messages": sample.ends, "lag": sample.lag_by_group()}


async def health_json(request: web.Request) -> web.Response:
    systems = request.app[SYSTEMS]
    sample = await asyncio.to_thread(request.app[DATA].sample_now)
    numbers: dict[str, Any] = {"messages": sample.ends, "lag": sample.lag_by_group()}
    numbers["connectors"] = {local.system: dict(local.connector.stats) for local in (systems.crm, systems.acct)}
    numbers["faults_injected"] = {local.system: dict(local.faults.counts) for local in (systems.crm, systems.acct)}
    numbers["capture"] = {
        local.system: {"events": local.capture.reporter.emitted} for local in (systems.crm, systems.acct)
    }
    return web.json_response(numbers)


def create_demo_dashboard(kafka: KafkaSettings, systems: LocalSystems, worker_metrics: str | None) -> web.Application:
    """The demo's page; ``worker_metrics``: the worker's /metrics (None: it serves none)."""
    app = create_dashboard(kafka, [worker_metrics] if worker_metrics else [], interval=2.0, own_metrics=True)
    app[SYSTEMS] = systems
    app.router.add_get("/health.json", health_json)
    return app
