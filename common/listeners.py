"""How every aiohttp application lienthong runs is served: ``serve_app`` and its access log.

One helper for every listener (the sandboxes, the accounting capture's public callback listener and
its probes, the webhook receiver, the operator's page, every service's ``/metrics`` and probes), so
that each one logs its requests the same way and none of them writes a secret into a log line:

* ``MaskedAccessLogger`` writes a request as its route (``/callback/{secret}``, not the path it
  matched: a route's variable part may be a secret) and its query with the values masked
  (``/?token=…``): a sandbox page opened with ``/?token=<admin token>``, or a POST carrying one, logs
  neither. Requests to ``/metrics``, ``/healthz`` and ``/readyz`` are logged at DEBUG (a scrape or a
  probe every few seconds would drown the rest); every other one at INFO.

This module imports no service.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger(__name__)

#: The logger of every request line (aiohttp's own name for it: its configuration applies).
ACCESS_LOGGER = logging.getLogger("aiohttp.access")

QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
MASK = "…"


def masked_target(request: web.BaseRequest) -> str:
    """What a log line says of the request's target: its route (or, when no route matched, its first
    path segment alone) and the names of its query's parameters, never their values."""
    route = request.match_info.route.resource if isinstance(request, web.Request) else None
    if route is not None:
        path = route.canonical
    else:  # nothing matched: the rest of the path may be anything the caller sent (a wrong secret too)
        first, _, rest = request.path.lstrip("/").partition("/")
        path = "/" + first + ("/" + MASK if rest else "")
    if request.query:
        path += "?" + "&".join(f"{name}={MASK}" for name in request.query)
    return path


class MaskedAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without secrets: ``<remote> "<METHOD> <route>?<name>=…" <status> <bytes> <seconds>``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            '%s "%s %s" %s %s %.3fs',
            request.remote or "-",
            request.method,
            masked_target(request),
            response.status,
            response.body_length,
            time,
        )


def app_runner(app: web.Application) -> web.AppRunner:
    """A runner of ``app`` that logs its requests through ``MaskedAccessLogger``."""
    return web.AppRunner(app, access_log_class=MaskedAccessLogger, access_log=ACCESS_LOGGER)


async def serve_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port (port 0: a free one, ``common.metrics.bound_port``) until the caller
    cleans up the returned runner."""
    runner = app_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
