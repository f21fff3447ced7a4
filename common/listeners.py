"""How every aiohttp application lienthong runs is served: ``serve_app`` and its access log.

One helper for every listener (the sandboxes, the accounting capture's public callback listener and
its probes, the webhook receiver, the operator's page, every service's ``/metrics`` and probes), so
that each one logs its requests the same way and none of them writes a secret into a log line:

* ``MaskedAccessLogger`` writes a request as its route (``/callback/{secret}``, not the path it
  matched: a route's variable part may be a secret) and its query with the values masked
  (``/?token=…``): a sandbox page opened with ``/?token=<admin token>``, or a POST carrying one, logs
  neither. Requests to ``/metrics``, ``/healthz`` and ``/readyz`` are logged at DEBUG (a scrape or a
  probe every few seconds would drown the rest); every other one at INFO.
* ``guard_requests``, applied to every application served here: a request's body must arrive whole
  within ``BODY_TIMEOUT_S`` (else 408, connection closed), and a client that resets its connection or
  sends a malformed message is one log line, not a traceback.

This module imports no service.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

#: The logger of every request line (aiohttp's own name for it: its configuration applies).
ACCESS_LOGGER = logging.getLogger("aiohttp.access")

QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
MASK = "…"


def masked_target(request: web.BaseRequest) -> str:
    """What a log line says of the request's target: its route (or, when no route matched, its first
    path segment alone) and the names of its query's parameters, never their values."""
    try:
        route = request.match_info.route.resource if isinstance(request, web.Request) else None
    except AssertionError:  # a message aiohttp could not parse was never routed: it has no match_info
        route = None
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


#: Seconds a client has to send a request's whole body once its headers are in. The bodies the
#: services take (webhooks, ACT callbacks, the sandboxes' API calls) are a few KB, 1 MiB at most
#: (aiohttp's client_max_size), so 10 s is ample on a slow link; a client trickling its body (2,000
#: such connections once held a receiver 60 s+ each) is answered 408 and cut off. A constant: nobody
#: has needed to tune it (tests pass ``BODY_TIMEOUT`` on their application).
BODY_TIMEOUT_S = 10.0
BODY_TIMEOUT = web.AppKey("body_timeout_s", float)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


@web.middleware
async def _read_body_in_time(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.body_exists:
        timeout = request.app.get(BODY_TIMEOUT, BODY_TIMEOUT_S)
        problem: tuple[int, str] | None = None
        try:
            async with asyncio.timeout(timeout):
                await request.read()  # aiohttp keeps it: the handler's own read() returns it at once
        except TimeoutError:
            problem = (408, f"the request body did not arrive whole within {timeout:g} s; send it at once")
        except (ConnectionError, HttpProcessingError) as exc:
            # a reset, a half-closed connection, a truncated or badly chunked body: the client's doing
            problem = (400, f"the request body could not be read ({_one_line(exc)}); send it whole")
        except web.HTTPRequestEntityTooLarge:
            # answered and closed here too: else aiohttp lingers reading the rest of the oversized body
            problem = (413, "the request body is too large (a service takes at most 1 MiB); send less")
        if problem is not None:
            log.warning(
                "%s %r from %s: %s; connection closed", request.method, request.path, request.remote, problem[1]
            )
            answer = web.json_response({"error": problem[1]}, status=problem[0])
            answer.force_close()
            if request.transport is not None and not request.transport.is_closing():
                await answer.prepare(request)
                await answer.write_eof()
            # closed now (the answer is flushed first): else aiohttp lingers up to 10 s more for the rest
            # of the body it was promised
            request.protocol.force_close()
            return answer
    return await handler(request)


class _ClientFaultsInOneLine(logging.Filter):
    """aiohttp's server logs a client's reset or malformed message with a whole traceback ("Error
    handling request"); 2,000 hostile connections made 2.4 MB of them. Those become one warning line;
    any other exception (a bug of ours) keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (ConnectionError, HttpProcessingError, TimeoutError)):
            record.msg, record.args = f"{record.getMessage()}: {_one_line(exc)}", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_CLIENT_FAULTS_IN_ONE_LINE = _ClientFaultsInOneLine()


def guard_requests(app: web.Application) -> web.Application:
    """The body timeout (``BODY_TIMEOUT_S``) before any other middleware of ``app``, and aiohttp's
    logs of client faults in one line. Returns ``app``; applying it twice changes nothing."""
    if _read_body_in_time not in app.middlewares:
        app.middlewares.insert(0, _read_body_in_time)
    logging.getLogger("aiohttp.server").addFilter(_CLIENT_FAULTS_IN_ONE_LINE)  # the same filter is added once
    return app


def app_runner(app: web.Application) -> web.AppRunner:
    """A runner of ``app``, guarded (``guard_requests``), that logs its requests through
    ``MaskedAccessLogger``."""
    guard_requests(app)
    return web.AppRunner(app, access_log_class=MaskedAccessLogger, access_log=ACCESS_LOGGER)


class CannotListen(OSError):
    """A port a service was told to listen on is taken (or not allowed): ``host``, ``port`` and why."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port} ({reason})")
        self.host, self.port, self.reason = host, port, reason


def _reason(exc: OSError) -> str:
    return "another process listens there" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))


def check_port(host: str, port: int) -> None:
    """Raise ``CannotListen`` when ``port`` on ``host`` cannot be listened on now (before starting a
    service whose listener fails deep inside a framework: the faust worker's ``/readyz``)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's listener does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CannotListen(host, port, _reason(exc)) from None


async def serve_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port (port 0: a free one, ``common.metrics.bound_port``) until the caller
    cleans up the returned runner. A port it cannot listen on raises ``CannotListen``."""
    runner = app_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(host, port, _reason(exc)) from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner
