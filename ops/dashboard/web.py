"""The operator's page, served by aiohttp: ``lienthong dashboard`` (and ``lienthong demo``).

Routes: ``/`` the page (refreshes itself every few seconds), ``/record/{tenant}/{entity}/{id}`` the
audit trail of one record with what became of each command, ``/api/summary.json`` the page's
numbers, and ``/metrics`` (``kafka_consumergroup_lag`` as the page shows it), ``/healthz``,
``/readyz``. docs/dashboard.md says what each part means.

Who may read it (``DashboardAccess``, checked before any route but the probes and ``/metrics``, which
every service serves alike on its internal port):

* the ``Host`` a request names must be one the page answers (loopback names, the bound address,
  ``LIENTHONG_DASHBOARD_HOSTS``): a page of another site whose name was re-pointed at this address (DNS
  rebinding) sends its own name and is answered 421, so it cannot read ``/api/summary.json``;
* with ``LIENTHONG_DASHBOARD_TOKEN``, a request carries the token: the page opened once with
  ``/?token=<token>`` gets an HttpOnly, SameSite=Strict cookie and is sent to the same URL without the
  token; scripts send ``Authorization: Bearer <token>``;
* every answer forbids framing and scripts (``Content-Security-Policy``: the page has none, its one
  style sheet is allowed by its hash), sniffing and the Referer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from common.kafka_config import confluent_config
from common.metrics import BrokerCheck, add_health_routes
from common.settings import KafkaSettings
from ops.dashboard.charts import line_chart
from ops.dashboard.collect import DashboardData, Sample, histogram_buckets, total
from ops.dashboard.health import SYNC_STATUSES, quantile_from_buckets
from ops.operations import audit_trail

DATA = web.AppKey("data", DashboardData)
KAFKA = web.AppKey("kafka", KafkaSettings)
HISTORY = web.AppKey("history", object)  # ops.history.KeptIndex, or None: no history page
REFRESH_SECONDS = 5

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;max-width:1250px}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ddd;padding:2px 8px;font-size:13px}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#777;font-size:12px}
.failing{color:#b00020;font-weight:bold}.pending{color:#a66a00}.insync{color:#1b7f3b}
.err{color:#b00020}code{font-size:12px}
"""

# The page runs no script and embeds nothing; its one <style> element is allowed by its hash.
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# What every service serves alike on its internal port (probes, Prometheus): no Host or token asked.
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DashboardAccess:
    """Who may read the page: the Host names it answers, and the token it asks for (None: none)."""

    hosts: frozenset[str] = field(default_factory=lambda: frozenset(LOOPBACK_NAMES))
    token: str | None = None

    @classmethod
    def of(cls, *, web_host: str, hosts: list[str], token: SecretStr | None) -> DashboardAccess:
        """From ``lienthong dashboard``'s settings (``LIENTHONG_WEB_HOST``, ``_DASHBOARD_HOSTS``,
        ``_DASHBOARD_TOKEN``): loopback names, the bound address (unless it is every address) and the
        hosts named."""
        bound = [] if web_host in ("0.0.0.0", "::", "") else [web_host]
        names = frozenset(_host_name(name) for name in (*LOOPBACK_NAMES, *bound, *hosts))
        return cls(hosts=names, token=token.get_secret_value() if token is not None else None)


ACCESS = web.AppKey("access", DashboardAccess)


def _host_name(host: str) -> str:
    """The name of a Host header (or a setting), its port and brackets left out, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _cookie_name(request: web.BaseRequest) -> str:
    # one per port: cookies do not tell ports apart, and a sandbox's page may run on the same host
    return f"lienthong_dashboard_{request.url.port or 0}"


def _same(offered: str | None, token: str) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


def _refused(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=SECURITY_HEADERS)


@web.middleware
async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The Host first, then the token (``DashboardAccess``); the probes and /metrics pass."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    access = request.app[ACCESS]
    if _host_name(request.host) not in access.hosts:
        return _refused(
            421,
            "this page answers only the host names of LIENTHONG_DASHBOARD_HOSTS (and loopback); "
            "open it by one of those, or add this one",
        )
    token = access.token
    if token is None:
        return await handler(request)
    if "token" in request.query:
        if request.method != "GET" or not _same(request.query.get("token"), token):
            return _refused(401, "the token in this link is not LIENTHONG_DASHBOARD_TOKEN")
        query = request.rel_url.query.copy()
        query.popall("token")
        answer = web.HTTPSeeOther(str(request.rel_url.with_query(query)), headers=SECURITY_HEADERS)
        answer.set_cookie(
            _cookie_name(request), token, httponly=True, samesite="Strict", secure=request.secure, path="/"
        )
        return answer
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if _same(request.cookies.get(_cookie_name(request)), token) or (
        scheme.lower() == "bearer" and _same(bearer.strip(), token)
    ):
        return await handler(request)
    return _refused(
        401,
        "this page needs LIENTHONG_DASHBOARD_TOKEN: open /?token=<token> once, or send 'Authorization: Bearer <token>'",
    )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.3f}"


def _shortened(text: str, limit: int = 300) -> str:
    """A dead letter's or a refusal's words on the page: their start (payload values in them are masked
    where they are written, streams.core.errors.masked; a system's refusal may still quote one)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _html_table(head: list[str], rows: list[str], testid: str, empty: str = "none yet") -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(rows) or f'<tr><td colspan="{len(head)}" class="muted">{_e(empty)}</td></tr>'
    return f'<table data-testid="{testid}"><tr>{header}</tr>{body}</table>'


def _record_link(settings_prefix: str, tenant: str, entity: str, record_id: str) -> str:
    path = f"/record/{quote(tenant, safe='')}/{quote(entity, safe='')}/{quote(record_id, safe='')}"
    return f'<a href="{path}">{_e(record_id)}</a>'


def summary(data: DashboardData) -> dict[str, Any]:
    """Everything the page shows, as plain data (``/api/summary.json``)."""
    with data.lock:
        history = list(data.history)
        health = data.health
        by_tenant = {f"{t}/{e}": row for (t, e), row in health.by_tenant_entity().items()}
        not_in_sync = [view.__dict__ for view in health.not_in_sync()]
        letters = [{**letter.__dict__, "message": _shortened(letter.message)} for letter in reversed(health.letters)]
        letter_counts = {f"{topic}/{reason}": n for (topic, reason), n in sorted(health.letter_counts.items())}
        latency = health.latency.percentiles()
        results = {f"{target}/{status}": n for (target, status), n in sorted(health.results_by_status.items())}
    last: Sample | None = history[-1] if history else None
    scraped = last.scraped if last else {}
    sync_latency = {
        target: {f"p{round(q * 100)}": quantile_from_buckets(buckets, q) for q in (0.5, 0.9, 0.99)}
        for target, buckets in histogram_buckets(scraped, "lienthong_sync_latency_seconds", "target").items()
    }
    return {
        "sampled_at": last.at if last else None,
        "lag": {f"{g}/{t}": v for (g, t), v in last.lag.items()} if last else {},
        "lag_by_group": last.lag_by_group() if last else {},
        "messages": last.ends if last else {},
        "throughput": _rates(history),
        "decided_to_applied_seconds": latency,
        "sync_latency_seconds": sync_latency,
        "dead_letters": letter_counts,
        "recent_dead_letters": letters[:50],
        "results": results,
        "sync_health": by_tenant,
        "not_in_sync": not_in_sync,
        "metrics": {
            "events_processed_by_outcome": {
                k[0]: v for k, v in total(scraped, "lienthong_events_processed_total", ("outcome",)).items()
            },
            "commands_emitted_by_target": {
                k[0]: v for k, v in total(scraped, "lienthong_commands_emitted_total", ("target",)).items()
            },
            "connector_results": {
                "/".join(k): v
                for k, v in total(scraped, "lienthong_connector_results_total", ("target", "status")).items()
            },
            "dead_letters": {
                "/".join(k): v for k, v in total(scraped, "lienthong_dead_letters_total", ("topic", "reason")).items()
            },
        },
        "scrape_errors": last.scrape_errors if last else {},
        "tail_error": data.tail_error,
    }


THROUGHPUT = {"change events in (cdc.*)": "cdc.", "commands out": "commands.", "results": "results."}


def _rates(history: list[Sample]) -> dict[str, float]:
    """Messages per second over the last two samples, per kind of topic."""
    if len(history) < 2:
        return {}
    before, after = history[-2], history[-1]
    seconds = max(after.at - before.at, 1e-3)
    return {name: _delta(before, after, prefix) / seconds for name, prefix in THROUGHPUT.items()}


def _delta(before: Sample, after: Sample, prefix: str) -> int:
    return sum(
        max(0, count - before.ends.get(topic, 0)) for topic, count in after.ends.items() if topic.startswith(prefix)
    )


def _charts(data: DashboardData) -> str:
    with data.lock:
        history = list(data.history)
    groups = sorted({g for s in history for g in s.lag_by_group()})
    lag = {g: [(s.at, float(s.lag_by_group().get(g, 0))) for s in history] for g in groups}
    throughput: dict[str, list[tuple[float, float]]] = {name: [] for name in THROUGHPUT}
    latency: dict[str, list[tuple[float, float]]] = {}
    for before, after in itertools.pairwise(history):
        seconds = max(after.at - before.at, 1e-3)
        for name, prefix in THROUGHPUT.items():
            throughput[name].append((after.at, _delta(before, after, prefix) / seconds))
    for sample in history:
        for target, buckets in histogram_buckets(sample.scraped, "lienthong_sync_latency_seconds", "target").items():
            for q in (0.5, 0.99):
                value = quantile_from_buckets(buckets, q)
                if value is not None:
                    latency.setdefault(f"{target} p{round(q * 100)}", []).append((sample.at, value))
        for target, row in sample.latency.items():
            for name in ("p50", "p99"):
                latency.setdefault(f"{target} decided→applied {name}", []).append((sample.at, row[name]))
    return (
        '<div class="charts">'
        + line_chart(lag, title="consumer lag per group (messages)", testid="chart-lag")
        + line_chart(throughput, title="throughput (messages/s)", unit="/s", testid="chart-throughput")
        + line_chart(latency, title="sync latency (seconds)", unit="s", testid="chart-latency")
        + "</div>"
    )


def render_page(data: DashboardData, kafka: KafkaSettings, refresh: int = REFRESH_SECONDS) -> str:
    """The page; it reloads itself every ``refresh`` seconds (0: never)."""
    s = summary(data)
    sampled = time.strftime("%H:%M:%S", time.localtime(s["sampled_at"])) if s["sampled_at"] else "not yet"
    problems = "".join(
        f'<p class="err" data-testid="problem">/metrics of {_e(url)} not read: {_e(err)}</p>'
        for url, err in s["scrape_errors"].items()
    )
    if s["tail_error"]:
        problems += f'<p class="err" data-testid="problem">{_e(s["tail_error"])}</p>'
    lag_rows = [
        f'<tr data-testid="lag-row" data-group="{_e(g)}" data-topic="{_e(t)}"><td>{_e(g)}</td><td>{_e(t)}</td>'
        f'<td class="n" data-testid="lag-value">{v}</td></tr>'
        for g_t, v in s["lag"].items()
        for g, t in [g_t.rsplit("/", 1)]
    ]
    rate_rows = [
        f'<tr data-testid="rate-row" data-kind="{_e(k)}"><td>{_e(k)}</td><td class="n">{v:.1f}</td></tr>'
        for k, v in s["throughput"].items()
    ]
    message_rows = [
        f'<tr data-testid="messages-row" data-topic="{_e(t)}"><td>{_e(t)}</td><td class="n">{n}</td></tr>'
        for t, n in sorted(s["messages"].items())
        if n
    ]
    outcome_rows = [
        f'<tr data-testid="processed-row" data-outcome="{_e(k)}"><td>{_e(k)}</td>'
        f'<td class="n" data-testid="processed-value">{_num(v)}</td></tr>'
        for k, v in s["metrics"]["events_processed_by_outcome"].items()
    ]
    latency_rows = [
        f'<tr data-testid="latency-row" data-target="{_e(t)}" data-source="metrics"><td>{_e(t)}</td>'
        f"<td>source change → applied (/metrics)</td>"
        + "".join(f'<td class="n">{"-" if row[q] is None else f"{row[q]:.3f}"}</td>' for q in ("p50", "p90", "p99"))
        + "<td></td></tr>"
        for t, row in s["sync_latency_seconds"].items()
    ] + [
        f'<tr data-testid="latency-row" data-target="{_e(t)}" data-source="topics"><td>{_e(t)}</td>'
        f"<td>decided → applied (audit.sync, results.*)</td>"
        + "".join(f'<td class="n">{row[q]:.3f}</td>' for q in ("p50", "p90", "p99"))
        + f'<td class="n">{row["count"]:.0f}</td></tr>'
        for t, row in s["decided_to_applied_seconds"].items()
    ]
    from_metrics = s["metrics"]["dead_letters"]
    letter_rows = [
        f'<tr data-testid="dlq-row" data-topic="{_e(key.split("/", 1)[0])}" data-reason="{_e(key.split("/", 1)[1])}">'
        f"<td>{_e(key.split('/', 1)[0])}</td><td>{_e(key.split('/', 1)[1])}</td>"
        f'<td class="n" data-testid="dlq-count">{n}</td>'
        f'<td class="n" data-testid="dlq-metrics">{_num(from_metrics[key]) if key in from_metrics else "-"}</td></tr>'
        for key, n in s["dead_letters"].items()
    ]
    recent_rows = [
        f'<tr data-testid="dlq-message"><td>{_e(letter["topic"])}</td><td>{_e(letter["reason"])}</td>'
        f"<td><code>{_e(letter['key'])}</code></td><td>{_e(_shortened(letter['message']))}</td>"
        f"<td>{_e(_when(letter['failed_at_ms']))}</td></tr>"
        for letter in s["recent_dead_letters"]
    ]
    result_rows = [
        f'<tr data-testid="result-row" data-key="{_e(k)}"><td>{_e(k)}</td><td class="n">{n}</td>'
        f'<td class="n">{_num(s["metrics"]["connector_results"][k]) if k in s["metrics"]["connector_results"] else "-"}'
        "</td></tr>"
        for k, n in s["results"].items()
    ]
    health_rows = [
        f'<tr data-testid="health-row" data-tenant="{_e(te.split("/", 1)[0])}" data-entity="{_e(te.split("/", 1)[1])}">'
        f"<td>{_e(te.split('/', 1)[0])}</td><td>{_e(te.split('/', 1)[1])}</td>"
        + "".join(
            f'<td class="n {status.replace(" ", "")}" data-status="{status}">{row[status]}</td>'
            for status in SYNC_STATUSES
        )
        + "</tr>"
        for te, row in s["sync_health"].items()
    ]
    record_rows = [
        f'<tr data-testid="record-row" data-status="{_e(v["status"])}"><td>{_e(v["tenant"])}</td>'
        f"<td>{_e(v['entity'])}</td><td>{_record_link('', v['tenant'], v['entity'], v['record_id'])}</td>"
        f'<td class="{v["status"].replace(" ", "")}">{_e(v["status"])}</td>'
        f'<td class="err">{_e(_shortened(v["last_error"] or ""))}</td><td>{_e(_when(v["last_change_ms"]))}</td></tr>'
        for v in s["not_in_sync"]
    ]
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        + (f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else "")
        + f"<title>lienthong: operations and sync health</title><style>{STYLE}</style></head><body>"
        f"<h1>lienthong: operations</h1>"
        f'<p class="muted">broker {_e(kafka.bootstrap_servers)}'
        f"{', topic prefix ' + _e(kafka.topic_prefix) if kafka.topic_prefix else ''}; "
        f'sampled <span data-testid="sampled-at">{sampled}</span> every {data.interval:g}s; '
        f"/metrics read from {_e(', '.join(data.scrape_urls) or 'no service (lienthong dashboard --scrape URL)')}"
        f"</p>{problems}"
        + _charts(data)
        + "<h2>Sync health per tenant and entity</h2>"
        + _html_table(["tenant", "entity", *SYNC_STATUSES], health_rows, "sync-health")
        + "<h2>Records not in sync</h2>"
        + _html_table(
            ["tenant", "entity", "record (audit trail)", "state", "last error", "last change"],
            record_rows,
            "not-in-sync",
            empty="every record is in sync",
        )
        + "<h2>Consumer lag</h2>"
        + _html_table(["group", "topic", "lag (messages)"], lag_rows, "lag")
        + "<h2>Dead letters by reason</h2>"
        + _html_table(["topic", "reason", "on the topic", "lienthong_dead_letters_total"], letter_rows, "dead-letters")
        + _html_table(["topic", "reason", "key", "message", "when"], recent_rows, "dead-letter-messages")
        + "<h2>Latency (seconds)</h2>"
        + _html_table(["target", "measured", "p50", "p90", "p99", "commands"], latency_rows, "latency")
        + "<h2>Throughput</h2>"
        + _html_table(["messages/s", "now"], rate_rows, "throughput")
        + _html_table(["events processed, by outcome (/metrics)", "total"], outcome_rows, "processed")
        + _html_table(["connector results (target/status)", "on results.*", "/metrics"], result_rows, "results")
        + _html_table(["topic", "messages written"], message_rows, "messages")
        + '<p class="muted"><a href="/api/summary.json">as JSON</a> · <a href="/metrics">/metrics</a></p>'
        + "</body></html>"
    )


async def page(request: web.Request) -> web.Response:
    try:
        refresh = int(request.query.get("refresh", REFRESH_SECONDS))
    except ValueError as exc:
        raise web.HTTPBadRequest(text="?refresh= takes whole seconds between reloads (0: never)") from exc
    return web.Response(text=render_page(request.app[DATA], request.app[KAFKA], refresh), content_type="text/html")


async def summary_json(request: web.Request) -> web.Response:
    return web.json_response(summary(request.app[DATA]))


async def record_page(request: web.Request) -> web.Response:
    kafka, data = request.app[KAFKA], request.app[DATA]
    tenant, entity, record_id = (request.match_info[k] for k in ("tenant", "entity", "record_id"))
    try:
        trail = await asyncio.to_thread(audit_trail, kafka, tenant, entity, record_id)
    except RuntimeError as exc:
        raise web.HTTPServiceUnavailable(text=f"the audit trail could not be read: {exc}") from exc
    rows = []
    with data.lock:
        record = data.health.records.get((tenant, entity, record_id))
        view = data.health.view(record) if record else None
        for audit in trail:
            commands = audit.get("commands") or []
            outcome = []
            for command in commands:
                known = data.health.command(command.get("command_id", ""))
                status = (known.status if known else None) or "no result yet"
                error = f" — {known.error}" if known and known.error else ""
                outcome.append(
                    f'<li data-testid="trail-command">{_e(command["rule"])}: {_e(command["op"])} '
                    f"{_e(command['target'])} {_e(command['entity'])} {_e(command['key'])} → "
                    f'<b data-testid="command-status">{_e(status)}</b>{_e(error)}</li>'
                )
            rows.append(
                f'<tr data-testid="trail-row"><td>{_e(_when(audit.get("ts_ms", 0)))}</td><td>{_e(audit["system"])}</td>'
                f"<td>{_e(audit['action'])}</td><td>{_e(audit.get('origin'))}</td>"
                f"<td>{_e(', '.join(audit.get('rules') or []) or 'no rule')}</td>"
                f"<td><ul>{''.join(outcome)}</ul>{_e(audit.get('reason') or '')}</td></tr>"
            )
    state = (
        f'<p>state: <b data-testid="record-status">{_e(view.status)}</b>'
        f"{' — ' + _e(view.last_error) if view and view.last_error else ''}</p>"
        if view
        else ""
    )
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(tenant)} {_e(entity)} {_e(record_id)}</title>'
        f"<style>{STYLE}</style></head><body><p><a href='/'>← operations</a></p>"
        f"<h1>{_e(entity)} {_e(record_id)} of {_e(tenant)}</h1>{state}"
        + (
            f'<p><a data-testid="history-link" href="/history/{quote(tenant, safe="")}/{quote(entity, safe="")}/'
            f'{quote(record_id, safe="")}">its whole history on both sides</a></p>'
            if request.app[HISTORY] is not None
            else ""
        )
        + _html_table(
            ["decided", "system", "action", "origin", "rules", "commands and their results"],
            rows,
            "audit-trail",
            empty=f"no audit record for {tenant}:{entity}:{record_id} on {kafka.topic_prefix}audit.sync",
        )
        + "</body></html>"
    )
    return web.Response(text=body, content_type="text/html")


async def history_page(request: web.Request) -> web.Response:
    """``/history/{tenant}/{entity}/{id}``: ``lienthong history`` of one record, from the index this
    process keeps current (ops.history)."""
    kept = request.app[HISTORY]
    tenant, entity, record_id = (request.match_info[k] for k in ("tenant", "entity", "record_id"))
    if kept is None:
        raise web.HTTPNotFound(text="this page keeps no history index (lienthong dashboard keeps one)")
    text = await asyncio.to_thread(kept.text, tenant, entity, record_id)  # type: ignore[attr-defined]
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>history of {_e(entity)} {_e(record_id)}</title>'
        f"<style>{STYLE}</style></head><body><p><a href='/'>← operations</a></p>"
        f"<h1>{_e(entity)} {_e(record_id)} of {_e(tenant)}: its history on both sides</h1>"
        f'<pre data-testid="history">{_e(text)}</pre>'
        f"<p class='muted'>the same as <code>lienthong history {_e(tenant)} {_e(entity)} {_e(record_id)}</code></p>"
        "</body></html>"
    )
    return web.Response(text=body, content_type="text/html")


def create_dashboard(
    kafka: KafkaSettings,
    scrape_urls: list[str] | None = None,
    *,
    interval: float = 5.0,
    own_metrics: bool = False,
    access: DashboardAccess | None = None,
    history: Any = None,
) -> web.Application:
    """The operator's page as an aiohttp application; its threads start and stop with the app.

    ``scrape_urls``: the services' ``/metrics`` to read; ``own_metrics``: also this process's (services
    running in it); ``access``: who may read it (default: loopback host names, no token); ``history``:
    the history index this process keeps current in the background (``ops.history.KeptIndex``: ``start``,
    ``stop``, ``text``), for the ``/history/…`` page (None: no such page)."""
    data = DashboardData(kafka, scrape_urls, interval=interval, own_metrics=own_metrics)
    kept = history
    app = web.Application(middlewares=[check_access])
    app[DATA], app[KAFKA], app[ACCESS], app[HISTORY] = data, kafka, access or DashboardAccess(), kept
    app.on_response_prepare.append(_security_headers)
    broker = BrokerCheck(confluent_config(kafka))

    async def ready() -> dict[str, str | None]:
        return {
            "broker": await broker.problem(),
            "sampled": None if data.history else "the first look at the broker has not finished yet",
        }

    async def start(app: web.Application) -> None:
        data.start()
        if kept is not None:
            kept.start()

    async def stop(app: web.Application) -> None:
        await asyncio.to_thread(data.stop)
        if kept is not None:
            await asyncio.to_thread(kept.stop)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/", page)
    app.router.add_get("/api/summary.json", summary_json)
    app.router.add_get("/record/{tenant}/{entity}/{record_id}", record_page)
    app.router.add_get("/history/{tenant}/{entity}/{record_id}", history_page)
    add_health_routes(app, ready, collectors=[data.lag_collector])
    return app
