"""Two workers of one group on the real broker: the group's lag is on one worker's ``/metrics`` only
(its elected member), so Prometheus' ``sum by (consumergroup)`` over both (the alert's and Grafana's
expression) is the group's lag as the admin client reads it (``lienthong lag``)."""

from __future__ import annotations

import time

import pytest

from ops.lag import describe_groups, read_lag
from tests.integration.conftest import in_data_dir
from tests.integration.test_health import WorkerWithProbes, samples

pytestmark = pytest.mark.broker


def group_lag(text: str, group: str) -> dict[tuple[str, str], float]:
    return {
        (labels["topic"], labels["partition"]): value
        for labels, value in samples(text, "kafka_consumergroup_lag")
        if labels.get("consumergroup") == group
    }


def test_the_groups_lag_is_exported_by_one_of_two_workers(module_settings, tmp_path):
    group = module_settings.app_id
    workers = [
        WorkerWithProbes(in_data_dir(module_settings, tmp_path / f"data{n}"), tmp_path / f"w{n}.log") for n in range(2)
    ]
    try:
        for worker in workers:
            worker.probe_until("/readyz", lambda answer: answer.status_code == 200, timeout=90)
        deadline = time.monotonic() + 60
        while True:
            described = describe_groups(module_settings.kafka, [group])[0]
            committed = {
                (row.topic, str(row.partition)): float(row.lag) for row in read_lag(module_settings.kafka, [group])
            }
            exported = [group_lag(worker.get("/metrics").text, group) for worker in workers]
            # settled: both are members, one exports every partition the group committed, the other none
            if len(described.members) == 2 and sorted(map(bool, exported)) == [False, True]:
                (shown,) = [e for e in exported if e]
                if set(shown) == set(committed):
                    break
            assert time.monotonic() < deadline, (described, exported, committed)
            time.sleep(0.5)
        assert shown == committed  # nothing flows: the same numbers as the admin client's
        texts = [worker.get("/metrics").text for worker in workers]
        total = sum(
            value
            for text in texts
            for labels, value in samples(text, "kafka_consumergroup_lag_sum")
            if labels.get("consumergroup") == group
        )
        assert total == sum(row.lag for row in read_lag(module_settings.kafka, [group]))
    finally:
        for worker in workers:
            worker.stop()
