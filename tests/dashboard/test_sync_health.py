"""The operator's page's view of the topics, without a broker: record states, percentiles, charts."""

from __future__ import annotations

import pytest

from common.names import DLQ_CDC, ERROR_KIND, ERROR_MESSAGE, FAILED_AT_MS, ORIGIN_TOPIC
from ops.dashboard.charts import line_chart
from ops.dashboard.health import SyncHealth, quantile_from_buckets


def audit(record_id: str, *command_ids: str, ts_ms: int = 1000, tenant: str = "t1") -> dict:
    return {
        "tenant": tenant,
        "system": "acct",
        "entity": "customer",
        "record_id": record_id,
        "ts_ms": ts_ms,
        "commands": [{"command_id": c, "target": "crm", "rule": "CUS-6"} for c in command_ids],
    }


def result(command_id: str, status: str, ts_ms: int = 1500, error: dict | None = None) -> dict:
    return {"command_id": command_id, "target": "crm", "status": status, "ts_ms": ts_ms, "error": error}


def states(health: SyncHealth) -> dict[str, str]:
    return {r.record_id: health.view(r).status for r in health.records.values()}


def test_a_record_is_pending_until_its_commands_come_back_and_failing_when_one_is_refused():
    health = SyncHealth()
    health.audit(audit("A1", "c1"))
    health.audit(audit("A2", "c2", "c3"))
    health.audit(audit("A3"))  # sent nothing
    assert states(health) == {"A1": "pending", "A2": "pending", "A3": "in sync"}
    health.result(result("c1", "applied"))
    health.result(result("c2", "duplicate"))
    health.result(result("c3", "rejected", error={"kind": "http_422", "message": "Phone is invalid"}))
    assert states(health) == {"A1": "in sync", "A2": "failing", "A3": "in sync"}
    assert health.view(health.records[("t1", "customer", "A2")]).last_error == "http_422: Phone is invalid"
    assert health.by_tenant_entity() == {("t1", "customer"): {"in sync": 2, "pending": 0, "failing": 1}}
    # the next change that sends commands decides again
    health.audit(audit("A2", "c4", ts_ms=3000))
    health.result(result("c4", "applied", ts_ms=3200))
    assert states(health)["A2"] == "in sync"


def test_a_result_read_before_its_audit_record_still_counts():
    health = SyncHealth()
    health.result(result("c1", "failed", error={"kind": "retries_exhausted", "message": "503 five times"}))
    health.audit(audit("A1", "c1"))
    assert states(health) == {"A1": "failing"}


def test_a_dead_lettered_change_marks_its_record_failing_with_the_letters_words():
    health = SyncHealth()
    health.audit(audit("A1", "c1"))
    health.result(result("c1", "applied"))
    headers = [
        (ERROR_KIND, b"schema"),
        (ERROR_MESSAGE, b"field 'after.code' is not text"),
        (ORIGIN_TOPIC, b"pre.cdc.acct.customer"),
        (FAILED_AT_MS, b"2000"),
    ]
    health.dead_letter(DLQ_CDC, b"t1:A1", headers)
    view = health.view(health.records[("t1", "customer", "A1")])
    assert view.status == "failing"
    assert view.last_error == "dead-lettered on dlq.cdc: schema: field 'after.code' is not text"
    assert health.letter_counts == {("dlq.cdc", "schema"): 1}
    assert [v.record_id for v in health.not_in_sync()] == ["A1"]


def test_latency_from_decision_to_applied():
    health = SyncHealth()
    for n in range(1, 101):
        health.audit(audit(f"A{n}", f"c{n}", ts_ms=1000))
        health.result(result(f"c{n}", "applied", ts_ms=1000 + n * 10))  # 0.01 s … 1.00 s after
    row = health.latency.percentiles()["crm"]
    assert (row["p50"], row["p90"], row["p99"], row["count"]) == (0.5, 0.9, 0.99, 100)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.625), (0.25, 0.3125), (0.9, 1.5), (1.0, 2.0)],
)
def test_quantiles_from_histogram_buckets_as_prometheus_computes_them(q, expected):
    # 4 observations up to 0.5 s, 4 more up to 1 s, 2 more up to 2 s
    buckets = [(0.5, 4.0), (1.0, 8.0), (2.0, 10.0), (float("inf"), 10.0)]
    assert quantile_from_buckets(buckets, q) == pytest.approx(expected)


def test_no_quantile_without_observations():
    assert quantile_from_buckets([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert quantile_from_buckets([], 0.5) is None


def test_a_chart_draws_each_series_and_says_when_there_is_nothing_yet():
    svg = line_chart({"g1": [(0, 1), (5, 3)], "g2": [(0, 0), (5, 2)]}, title="lag", unit="messages", testid="chart-lag")
    assert svg.count("<polyline") == 2 and 'data-testid="chart-lag"' in svg and "g1: <b>3</b>" in svg
    assert "collecting" in line_chart({}, title="lag", unit="messages")
