"""The operator's page without a broker: human units, axes, the overall status, a record's name and commands."""

from __future__ import annotations

import re
import shlex
import time

import pytest

from common.names import DLQ_CDC, DLQ_COMMANDS, ERROR_KIND, ERROR_MESSAGE, FAILED_AT_MS, ORIGIN_TOPIC
from ops.dashboard.charts import axis_ticks, human, line_chart
from ops.dashboard.collect import Sample
from ops.dashboard.health import SyncHealth
from ops.dashboard.status import overall_status
from ops.dashboard.web import explain_command, replay_command


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0, "seconds", "0"),
        (0.0, "messages/s", "0"),
        (1e-9, "messages/s", "<0.001/s"),  # never e-notation, never 0
        (0.125, "seconds", "125 ms"),
        (0.0042, "seconds", "4.2 ms"),
        (2.5, "seconds", "2.5 s"),
        (300, "seconds", "5 min"),
        (8, "messages", "8"),
        (12_345, "messages", "12.3k"),
        (2_500_000, "messages", "2.5M"),
        (6.25, "messages/s", "6.25/s"),
    ],
)
def test_numbers_are_written_in_human_units(value, unit, shown):
    assert human(value, unit) == shown


def test_a_flat_axis_reads_zero_to_one_and_a_busy_one_ends_on_a_round_number():
    assert axis_ticks(0, "messages") == [0, 1]
    assert axis_ticks(0, "messages/s") == [0, 0.5, 1.0]
    assert axis_ticks(8, "messages") == [0, 2, 4, 6, 8]
    assert axis_ticks(6.3, "messages/s")[-1] == 8
    assert axis_ticks(3, "messages") == [0, 1, 2, 3]  # whole messages, never 0.75
    assert axis_ticks(0.13, "seconds")[-1] == pytest.approx(0.15)


def test_a_flat_chart_marks_zero_as_zero_and_its_legend_is_whole():
    long_name = "crm source change→applied p99 of a rather long series name"
    chart = line_chart({long_name: [(0, 0.0), (5, 0.0)], "b": [(0, 0.0), (5, 0.0)]}, title="x", unit="messages/s")
    ticks = re.findall(r'data-testid="y-tick">([^<]*)<', chart)
    assert ticks == ["0", "0.5/s", "1/s"]
    assert not re.search(r"\de-\d", chart)
    assert f"{long_name}: <b>0</b>" in chart  # HTML legend: it wraps, nothing is cut
    assert 'viewBox="0 0 ' in chart and ' width="' not in chart.split("<svg", 1)[1].split(">", 1)[0]


def look(at: float, lag: int, errors: dict[str, str] | None = None) -> Sample:
    return Sample(at, {("g", "commands.crm"): lag}, {}, {}, errors or {})


def status_of(history, **counts):
    args = {"failing": 0, "pending": 0, "records": 10, "sample_error": None, "tail_error": None} | counts
    return overall_status(history, interval=5, now=history[-1].at if history else 0, **args)


def test_the_overall_status_says_all_in_sync_only_when_nothing_is_wrong():
    steady = [look(t, 3) for t in (0, 5, 10, 15)]
    assert status_of(steady).state == "in sync"
    assert status_of(steady).headline == "All in sync: 10 records, none failing or pending"
    assert status_of(steady, pending=2).state == "pending"
    failing = status_of(steady, failing=4, pending=1)
    assert (failing.state, failing.headline) == ("failing", "4 records failing")
    assert [i.text for i in failing.items] == ["4 records failing", "1 record waiting for a result"]


def test_rising_lag_and_a_service_down_come_first():
    rising = [look(0, 0), look(5, 4), look(10, 8)]
    status = status_of(rising)
    assert status.state == "lag rising" and "g from 0 to 8 messages" in status.items[0].text
    assert status_of([look(0, 8), look(5, 8), look(10, 8)]).state == "in sync"  # behind, but not rising
    down = [*rising[:-1], look(10, 8, {"http://127.0.0.1:1/metrics": "URLError: refused"})]
    status = status_of(down, failing=1)
    assert status.state == "down"
    assert status.headline == "A service is down · 1 record failing · lag rising"
    assert "http://127.0.0.1:1/metrics does not answer" in status.items[0].text


def test_no_recent_look_means_the_broker_does_not_answer():
    status = overall_status(
        [look(0, 0)], interval=5, now=100, failing=0, pending=0, records=0, sample_error=None, tail_error=None
    )
    assert status.state == "down" and "no look at the broker since" in status.items[0].text


def audit(record_id: str, commands: list[dict], ts_ms: int = 1000) -> dict:
    return {
        "tenant": "cty a",
        "system": "acct",
        "entity": "customer",
        "record_id": record_id,
        "ts_ms": ts_ms,
        "commands": commands,
    }


def test_a_record_is_named_by_its_business_code_and_says_how_to_replay_it():
    health = SyncHealth()
    cus6 = {"command_id": "c1", "target": "crm", "rule": "CUS-6", "entity": "customer", "key": "KH0004"}
    health.audit(audit("0b9e-uuid", [cus6]))
    health.result(
        {
            "command_id": "c1",
            "target": "crm",
            "status": "rejected",
            "ts_ms": 1500,
            "error": {"kind": "http_422", "message": "Phone is invalid"},
        }
    )
    view = health.view(health.records[("cty a", "customer", "0b9e-uuid")])
    assert (view.title, view.status, view.dead_letter) == ("KH0004", "failing", (DLQ_COMMANDS, "http_422"))
    assert shlex.split(explain_command(view.tenant, view.entity, view.title)) == [
        "lienthong",
        "explain",
        "cty a",
        "customer",
        "KH0004",
    ]
    assert shlex.split(replay_command(view.tenant, *view.dead_letter)) == [
        "lienthong",
        "dlq",
        "replay",
        "--topic",
        "dlq.commands",
        "--tenant",
        "cty a",
        "--kind",
        "http_422",
    ]
    # a change dead-lettered on dlq.cdc: its record is known by its id only, replayed from dlq.cdc
    headers = [
        (ERROR_KIND, b"decode"),
        (ERROR_MESSAGE, b"not JSON"),
        (ORIGIN_TOPIC, b"cdc.acct.customer"),
        (FAILED_AT_MS, b"2000"),
    ]
    health.dead_letter(DLQ_CDC, b"cty a:BAD1", headers)
    bad = health.view(health.records[("cty a", "customer", "BAD1")])
    assert (bad.title, bad.dead_letter) == ("BAD1", (DLQ_CDC, "decode"))
    assert health.count("failing") == 2


def test_the_page_opens_with_its_status_and_names_a_failing_record_by_code():
    from common.settings import KafkaSettings
    from ops.dashboard.collect import DashboardData
    from ops.dashboard.web import render_page

    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    data = DashboardData(kafka, interval=5)  # not started: fed by hand
    now = time.time()
    data.history.extend([look(now - seconds, 0) for seconds in (10, 5, 0)])  # three recent looks: the broker answers
    for n, status in ((1, "applied"), (2, "rejected")):
        command = {"command_id": f"c{n}", "target": "crm", "rule": "CUS-6", "entity": "customer", "key": f"KH000{n}"}
        data.health.audit(audit(f"uuid-{n}", [command]))
        error = {"kind": "http_422", "message": "Phone is invalid"} if status == "rejected" else None
        data.health.result({"command_id": f"c{n}", "target": "crm", "status": status, "ts_ms": 1500, "error": error})
    page = render_page(data, kafka, refresh=0)
    body = page.split("<body>", 1)[1]
    assert body.index('data-testid="overall-status"') < body.index('class="charts"')
    assert 'data-state="failing"' in body and "1 record failing" in body
    assert '<td class="n zero" data-status="pending">0</td>' in body  # a zero is grey, not red
    assert '<td class="n failing" data-status="failing">1</td>' in body
    assert ">KH0002</a>" in body and "lienthong explain &#x27;cty a&#x27; customer KH0002" in body
    assert "lienthong dlq replay --topic dlq.commands --tenant &#x27;cty a&#x27; --kind http_422" in body
