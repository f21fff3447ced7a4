"""The operator's page, served by aiohttp: ``lienthong dashboard`` (and ``lienthong demo``).

Routes: ``/`` the page (refreshes itself every few seconds), ``/record/{tenant}/{entity}/{id}`` the
audit trail of one record with what became of each command, ``/api/summary.json`` the page's
numbers, ``/whatif/{n}`` a saved ``whatif --json`` report (``--whatif FILE``), and ``/metrics``
(``kafka_consumergroup_lag`` as the page shows it), ``/healthz``, ``/readyz``.
docs/dashboard.md says what each part means.

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
import shlex
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
from ops.dashboard import whatif_page
from ops.dashboard.charts import SWATCH_CSS, Unit, human, line_chart
from ops.dashboard.collect import DashboardData, Sample, histogram_buckets, total
from ops.dashboard.health import SYNC_STATUSES, RecordView, quantile_from_buckets
from ops.dashboard.status import OverallStatus, lag_rising, overall_status
from ops.operations import audit_trail

DATA = web.AppKey("data", DashboardData)
KAFKA = web.AppKey("kafka", KafkaSettings)
HISTORY = web.AppKey("history", object)  # ops.history.KeptIndex, or None: no history page
WHATIF = web.AppKey("whatif", list)  # ops.dashboard.whatif_page.SavedReport, given with --whatif
REFRESH_SECONDS = 5

STYLE = (
    """
body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.3em 0}
td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;vertical-align:top}td.err,td.msg{overflow-wrap:anywhere}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}table.wide{width:100%}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:8px 24px}
figure.chart{margin:0}figure.chart svg{width:100%;height:auto;display:block}
ul.legend{list-style:none;margin:2px 0 0;padding:0 0 0 13%;font-size:13px;display:flex;flex-wrap:wrap;gap:2px 16px}
.sw{display:inline-block;width:10px;height:10px;margin-right:5px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:0 32px}
.status{border:1px solid;border-radius:6px;padding:.6em 1em;margin:.7em 0 1em}
.status ul{margin:.3em 0 0;padding-left:1.3em}
.status .headline{font-size:1.2em;font-weight:bold}.s-insync{background:#e8f5ec;border-color:#1b7f3b}
.s-pending,.s-lagrising,.s-starting{background:#fff7e0;border-color:#a66a00}
.s-failing,.s-down{background:#fdecee;border-color:#b00020}
.failing{color:#b00020;font-weight:bold}.pending{color:#a66a00}.insync{color:#1b7f3b}.zero{color:#aaa}
.err{color:#b00020}code{font-size:12px}.muted{color:#777;font-size:12px}.note{color:#555;font-size:12px;max-width:75em}
code.cmd{user-select:all;background:#f2f2f2;border:1px solid #e0e0e0;padding:1px 5px}
code.cmd{display:inline-block;margin:1px 0}
.differs{background:#fff3cd}
"""
    + SWATCH_CSS
)

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


def _html_table(head: list[str], rows: list[str], testid: str, empty: str = "none yet", wide: bool = False) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(rows) or f'<tr><td colspan="{len(head)}" class="muted">{_e(empty)}</td></tr>'
    return f'<table data-testid="{testid}"{" class=wide" if wide else ""}><tr>{header}</tr>{body}</table>'


def _record_path(tenant: str, entity: str, record_id: str) -> str:
    return f"/record/{quote(tenant, safe='')}/{quote(entity, safe='')}/{quote(record_id, safe='')}"


def explain_command(tenant: str, entity: str, code: str) -> str:
    """The command that prints a record's audit trail (README, "The `lienthong` command")."""
    return shlex.join(["lienthong", "explain", tenant, entity, code])


def replay_command(tenant: str, topic: str, kind: str) -> str:
    """The command that sends a failing record's dead letters back once the cause is fixed: every letter of
    ``topic`` of the tenant with that reason (``--dry-run`` lists them first)."""
    return shlex.join(["lienthong", "dlq", "replay", "--topic", topic, "--tenant", tenant, "--kind", kind])


def _commands_html(view: RecordView) -> str:
    """The copyable commands for a record: its audit trail, and for a failing one its replay."""
    explain = explain_command(view.tenant, view.entity, view.title)
    lines = [f'<code class="cmd" data-testid="explain-command">{_e(explain)}</code>']
    if view.status == "failing" and view.dead_letter is not None:
        topic, kind = view.dead_letter
        lines.append(
            f'<code class="cmd" data-testid="replay-command">{_e(replay_command(view.tenant, topic, kind))}</code>'
        )
    return "<br>".join(lines)


def _status_html(status: OverallStatus) -> str:
    items = "".join(
        f'<li data-testid="status-item" data-kind="{_e(item.kind)}">{_e(item.text)}'
        + (f' (<a href="{_e(item.link)}">below</a>)' if item.link else "")
        + "</li>"
        for item in status.items
    )
    return (
        f'<section class="status s-{status.state.replace(" ", "")}" data-testid="overall-status" '
        f'data-state="{_e(status.state)}">'
        f'<div class="headline" data-testid="status-headline">{_e(status.headline)}</div>'
        + (f"<ul>{items}</ul>" if items else "")
        + "</section>"
    )


WHY_TOPIC_AND_METRICS_DIFFER = (
    "Two counts of the same thing, from two places: <b>on the topic</b> counts every message {topic} still "
    "holds, written by any service since the topic began (old ones leave with its retention); "
    "<b>{metric}</b> is what the services given with <code>--scrape</code> counted since each last "
    "started (<code>-</code>: none of them counts it, e.g. a service not scraped). They differ after a "
    "restart, with a service not scraped, or once retention removed old messages."
)


def _why_differ(topic: str, metric: str, differing: int) -> str:
    lead = f"<b>{differing} row(s) differ (marked).</b> " if differing else ""
    return (
        f'<p class="note" data-testid="why-differ">{lead}'
        + WHY_TOPIC_AND_METRICS_DIFFER.format(topic=topic, metric=metric)
        + "</p>"
    )


DIFFERS = ' class="differs" data-differs="true"'


def summary(data: DashboardData) -> dict[str, Any]:
    """Everything the page shows, as plain data (``/api/summary.json``)."""
    return _summary(data)[0]


def _summary(data: DashboardData) -> tuple[dict[str, Any], OverallStatus, list[RecordView]]:
    """The summary, the overall status and the records not in sync, as the page shows them."""
    with data.lock:
        history = list(data.history)
        health = data.health
        by_tenant = {f"{t}/{e}": row for (t, e), row in health.by_tenant_entity().items()}
        views = health.not_in_sync()
        not_in_sync = [{**view.__dict__, "title": view.title} for view in views]
        counts = {status: health.count(status) for status in SYNC_STATUSES}
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
    status = overall_status(
        history,
        interval=data.interval,
        failing=counts["failing"],
        pending=counts["pending"],
        records=sum(counts.values()),
        sample_error=data.sample_error,
        tail_error=data.tail_error,
    )
    numbers = {
        "status": {
            "state": status.state,
            "headline": status.headline,
            "items": [{"kind": i.kind, "text": i.text} for i in status.items],
        },
        "records_by_status": counts,
        "sampled_at": last.at if last else None,
        "lag": {f"{g}/{t}": v for (g, t), v in last.lag.items()} if last else {},
        "lag_by_group": last.lag_by_group() if last else {},
        "lag_rising": {g: {"from": a, "to": b, "seconds": s} for g, (a, b, s) in lag_rising(history).items()},
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
    return numbers, status, views


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
                    latency.setdefault(f"{target} source change→applied p{round(q * 100)}", []).append(
                        (sample.at, value)
                    )
        for target, row in sample.latency.items():
            for name in ("p50", "p99"):
                latency.setdefault(f"{target} decided→applied {name}", []).append((sample.at, row[name]))
    charts: list[tuple[dict[str, list[tuple[float, float]]], str, Unit, str]] = [
        (lag, "consumer lag per group (messages)", "messages", "chart-lag"),
        (throughput, "throughput (messages per second)", "messages/s", "chart-throughput"),
        (latency, "sync latency", "seconds", "chart-latency"),
    ]
    return (
        '<div class="charts">'
        + "".join(line_chart(series, title=title, unit=unit, testid=testid) for series, title, unit, testid in charts)
        + "</div>"
    )


def _count_cell(status: str, count: int) -> str:
    """A sync-health count: coloured by its state when there are any, grey when none."""
    css = status.replace(" ", "") if count else "zero"
    return f'<td class="n {css}" data-status="{_e(status)}">{count}</td>'


def render_page(
    data: DashboardData, kafka: KafkaSettings, refresh: int = REFRESH_SECONDS, whatif_list: str = ""
) -> str:
    """The page; it reloads itself every ``refresh`` seconds (0: never)."""
    s, status, views = _summary(data)
    sampled = time.strftime("%H:%M:%S UTC", time.gmtime(s["sampled_at"])) if s["sampled_at"] else "not yet"
    lag_rows = [
        f'<tr data-testid="lag-row" data-group="{_e(g)}" data-topic="{_e(t)}"><td>{_e(g)}</td><td>{_e(t)}</td>'
        f'<td class="n{"" if v else " zero"}" data-testid="lag-value">{v}</td></tr>'
        for g_t, v in s["lag"].items()
        for g, t in [g_t.rsplit("/", 1)]
    ]
    rate_rows = [
        f'<tr data-testid="rate-row" data-kind="{_e(k)}"><td>{_e(k)}</td>'
        f'<td class="n">{_e(human(v, "messages/s"))}</td></tr>'
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
        + "".join(
            f'<td class="n">{"-" if row[q] is None else _e(human(row[q], "seconds"))}</td>'
            for q in ("p50", "p90", "p99")
        )
        + "<td></td></tr>"
        for t, row in s["sync_latency_seconds"].items()
    ] + [
        f'<tr data-testid="latency-row" data-target="{_e(t)}" data-source="topics"><td>{_e(t)}</td>'
        f"<td>decided → applied (audit.sync, results.*)</td>"
        + "".join(f'<td class="n">{_e(human(row[q], "seconds"))}</td>' for q in ("p50", "p90", "p99"))
        + f'<td class="n">{row["count"]:.0f}</td></tr>'
        for t, row in s["decided_to_applied_seconds"].items()
    ]
    from_metrics = s["metrics"]["dead_letters"]
    letter_rows, letters_differ = [], 0
    for key, n in s["dead_letters"].items():
        topic, reason = key.split("/", 1)
        counted = from_metrics.get(key)
        differs = counted is not None and counted != n
        letters_differ += differs
        letter_rows.append(
            f'<tr data-testid="dlq-row" data-topic="{_e(topic)}" data-reason="{_e(reason)}"'
            f"{DIFFERS if differs else ''}>"
            f"<td>{_e(topic)}</td><td>{_e(reason)}</td>"
            f'<td class="n" data-testid="dlq-count">{n}</td>'
            f'<td class="n" data-testid="dlq-metrics">{_num(counted) if counted is not None else "-"}</td></tr>'
        )
    recent_rows = [
        f'<tr data-testid="dlq-message"><td>{_e(letter["topic"])}</td><td>{_e(letter["reason"])}</td>'
        f"<td><code>{_e(letter['key'])}</code></td><td class=msg>{_e(_shortened(letter['message']))}</td>"
        f"<td>{_e(_when(letter['failed_at_ms']))}</td></tr>"
        for letter in s["recent_dead_letters"]
    ]
    result_rows, results_differ = [], 0
    for key, n in s["results"].items():
        counted = s["metrics"]["connector_results"].get(key)
        differs = counted is not None and counted != n
        results_differ += differs
        result_rows.append(
            f'<tr data-testid="result-row" data-key="{_e(key)}"'
            f"{DIFFERS if differs else ''}><td>{_e(key)}</td>"
            f'<td class="n">{n}</td><td class="n">{_num(counted) if counted is not None else "-"}</td></tr>'
        )
    health_rows = [
        f'<tr data-testid="health-row" data-tenant="{_e(te.split("/", 1)[0])}" data-entity="{_e(te.split("/", 1)[1])}">'
        f"<td>{_e(te.split('/', 1)[0])}</td><td>{_e(te.split('/', 1)[1])}</td>"
        + "".join(_count_cell(status, row[status]) for status in SYNC_STATUSES)
        + "</tr>"
        for te, row in s["sync_health"].items()
    ]
    record_rows = [
        f'<tr data-testid="record-row" data-status="{_e(v.status)}" data-record-id="{_e(v.record_id)}">'
        f"<td>{_e(v.tenant)}</td><td>{_e(v.entity)}</td>"
        f'<td><a href="{_e(_record_path(v.tenant, v.entity, v.record_id))}">{_e(v.title)}</a></td>'
        f"<td><code>{_e(v.record_id)}</code> ({_e(v.system)})</td>"
        f'<td class="{v.status.replace(" ", "")}">{_e(v.status)}</td>'
        f'<td class="err">{_e(_shortened(v.last_error or ""))}</td><td>{_e(_when(v.last_change_ms))}</td>'
        f"<td>{_commands_html(v)}</td></tr>"
        for v in views
    ]
    shown, out_of_sync = len(s["not_in_sync"]), s["records_by_status"]["failing"] + s["records_by_status"]["pending"]
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        + (f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else "")
        + f"<title>{_e(status.headline)} · lienthong: operations and sync health</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>lienthong: operations</h1>"
        f'<p class="muted">broker {_e(kafka.bootstrap_servers)}'
        f"{', topic prefix ' + _e(kafka.topic_prefix) if kafka.topic_prefix else ''}; "
        f'last look <span data-testid="sampled-at">{sampled}</span>, one every {data.interval:g} s; '
        f"/metrics read from {_e(', '.join(data.scrape_urls) or 'no service (lienthong dashboard --scrape URL)')}"
        "</p>"
        + _status_html(status)
        + _charts(data)
        + '<h2 id="sync-health">Sync health per tenant and entity (records)</h2>'
        + _html_table(["tenant", "entity", *SYNC_STATUSES], health_rows, "sync-health")
        + '<h2 id="not-in-sync">Records not in sync</h2>'
        + (
            f'<p class="note">Showing {shown} of {out_of_sync}: the failing first, then the pending, '
            "latest change first.</p>"
            if shown < out_of_sync
            else ""
        )
        + '<p class="note">Each command is copyable (one click selects it): <code>lienthong explain</code> prints the '
        "record's audit trail; <code>lienthong dlq replay</code> sends its dead letters back once the cause is fixed "
        "(every letter of that tenant with that reason; add <code>--dry-run</code> to list them first).</p>"
        + _html_table(
            ["tenant", "entity", "record (audit trail)", "record id", "state", "last error", "last change", "commands"],
            record_rows,
            "not-in-sync",
            empty="every record is in sync",
            wide=True,
        )
        + '<div class="cols"><div><h2 id="lag">Consumer lag</h2>'
        + _html_table(["group", "topic", "lag (messages)"], lag_rows, "lag")
        + '<p class="note">Lag counts offsets: the processor writes in transactions, and each transaction’s '
        "commit marker takes an offset too, so a group behind on a topic the processor writes lags by more "
        "offsets than it has messages to read.</p>"
        + "<h2>Latency</h2>"
        + _html_table(["target", "measured", "p50", "p90", "p99", "commands"], latency_rows, "latency")
        + '<p class="note"><b>source change → applied</b>: from the change in the source system to the target’s '
        "answer (the connectors' histogram). <b>decided → applied</b>: from the processor's decision to the "
        "connector's result, over the last 5 000 commands per target (the topics).</p>"
        + "</div><div><h2>Dead letters by reason</h2>"
        + _html_table(["topic", "reason", "on the topic", "lienthong_dead_letters_total"], letter_rows, "dead-letters")
        + _why_differ("dlq.*", "lienthong_dead_letters_total", letters_differ)
        + _html_table(["topic", "reason", "key", "message", "when"], recent_rows, "dead-letter-messages")
        + "<h2>Connector results</h2>"
        + _html_table(["target/status", "on results.*", "/metrics"], result_rows, "results")
        + _why_differ("results.*", "lienthong_connector_results_total (/metrics)", results_differ)
        + "</div><div><h2>Throughput</h2>"
        + _html_table(["messages per second", "now"], rate_rows, "throughput")
        + _html_table(["events processed, by outcome (/metrics)", "total"], outcome_rows, "processed")
        + _html_table(["topic", "offsets written"], message_rows, "messages")
        + '<p class="note">Offsets written: the topics’ end offsets, commit markers included (see Consumer lag), '
        "so a topic the processor writes shows more than its messages. Events processed count what the "
        "worker read, by what it did with each.</p>"
        + "</div></div>"
        + whatif_list
        + '<p class="muted"><a href="/api/summary.json">as JSON</a> · <a href="/metrics">/metrics</a></p>'
        + "</body></html>"
    )


async def page(request: web.Request) -> web.Response:
    try:
        refresh = int(request.query.get("refresh", REFRESH_SECONDS))
    except ValueError as exc:
        raise web.HTTPBadRequest(text="?refresh= takes whole seconds between reloads (0: never)") from exc
    text = render_page(request.app[DATA], request.app[KAFKA], refresh, whatif_page.list_html(request.app[WHATIF]))
    return web.Response(text=text, content_type="text/html")


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
    if view is None:  # a record the page has not seen (yet): what the trail says of it
        own = [
            str(c["key"]) for a in trail for c in a.get("commands") or [] if c.get("entity") == entity and c.get("key")
        ]
        system = str(trail[-1].get("system", "")) if trail else ""
        view = RecordView(tenant, entity, record_id, system, "in sync", None, 0, code=own[-1] if own else None)
        state = ""
    else:
        state = (
            f'<p>state: <b data-testid="record-status" class="{view.status.replace(" ", "")}">{_e(view.status)}</b>'
            f"{' — ' + _e(view.last_error) if view.last_error else ''}</p>"
        )
    todo = (
        '<h2>Commands</h2><p class="note">Copyable (one click selects a command). <code>explain</code> prints this '
        "audit trail in a terminal."
        + (
            " <code>dlq replay</code> sends the record's dead letters back to where they came from once the cause is "
            "fixed: every letter of this tenant with this reason (add <code>--dry-run</code> to list them first)."
            if view.status == "failing" and view.dead_letter
            else ""
        )
        + f"</p><p>{_commands_html(view)}</p>"
    )
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(entity)} {_e(view.title)} of {_e(tenant)}'
        f"</title><style>{STYLE}</style></head><body><p><a href='/'>← operations</a></p>"
        f'<h1 data-testid="record-title">{_e(entity)} {_e(view.title)} of {_e(tenant)}</h1>'
        f'<p class="muted">record id <code data-testid="record-id">{_e(record_id)}</code>'
        f"{' in ' + _e(view.system) if view.system else ''}</p>{state}{todo}"
        + (
            f'<p><a data-testid="history-link" href="/history/{quote(tenant, safe="")}/{quote(entity, safe="")}/'
            f'{quote(record_id, safe="")}">its whole history on both sides</a></p>'
            if request.app[HISTORY] is not None
            else ""
        )
        + "<h2>Audit trail</h2>"
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


async def whatif_report_page(request: web.Request) -> web.Response:
    """``/whatif/{n}``: the n-th saved ``whatif --json`` report given with ``--whatif`` (from 1)."""
    reports = request.app[WHATIF]
    n = request.match_info["n"]
    if not n.isdigit() or not 1 <= int(n) <= len(reports):
        raise web.HTTPNotFound(
            text=f"no saved whatif report {n}: this page has {len(reports)} (lienthong dashboard --whatif FILE)"
        )
    text = whatif_page.render_report(reports[int(n) - 1], int(n), STYLE)
    return web.Response(text=text, content_type="text/html")


def create_dashboard(
    kafka: KafkaSettings,
    scrape_urls: list[str] | None = None,
    *,
    interval: float = 5.0,
    own_metrics: bool = False,
    access: DashboardAccess | None = None,
    history: Any = None,
    whatif_reports: list[whatif_page.SavedReport] | None = None,
) -> web.Application:
    """The operator's page as an aiohttp application; its threads start and stop with the app.

    ``scrape_urls``: the services' ``/metrics`` to read; ``own_metrics``: also this process's (services
    running in it); ``access``: who may read it (default: loopback host names, no token); ``history``:
    the history index this process keeps current in the background (``ops.history.KeptIndex``: ``start``,
    ``stop``, ``text``), for the ``/history/…`` page (None: no such page); ``whatif_reports``: saved
    ``whatif --json`` reports, listed on the page and shown at ``/whatif/{n}``."""
    data = DashboardData(kafka, scrape_urls, interval=interval, own_metrics=own_metrics)
    kept = history
    app = web.Application(middlewares=[check_access])
    app[DATA], app[KAFKA], app[ACCESS], app[HISTORY] = data, kafka, access or DashboardAccess(), kept
    app[WHATIF] = list(whatif_reports or [])
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
    app.router.add_get("/whatif/{n}", whatif_report_page)
    add_health_routes(app, ready, collectors=[data.lag_collector])
    return app
