"""The benchmark runs end to end on the real broker and reports what it says it reports.

A small run (hundreds of events, a two-second latency run, a short RSS run): it must complete and
its JSON and terminal table must be well-formed. How fast the numbers are is not a test's business
(docs/performance.md records them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.run import local_broker_pid

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


def test_a_small_benchmark_run_completes_and_reports_every_measurement(bootstrap, tmp_path):
    report_path = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--events",
            "600",
            "--tenants",
            "5",
            "--rate",
            "50",
            "--latency-seconds",
            "2",
            "--rss-events",
            "1200",
            "--bootstrap",
            bootstrap,
            "--json",
            str(report_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = orjson.loads(report_path.read_bytes())

    worker = report["worker"]
    assert worker["events"] == 600 and worker["audit_records"] == 600
    assert worker["commands"] > 0 and worker["events_per_s"] > 0 and worker["peak_rss_mb"] > 0
    # what the rest of the machine cost beside the workers: the broker's CPU when it runs here
    assert worker["bench_cpu_us_per_event"] > 0
    if local_broker_pid(bootstrap) is not None:
        assert worker["broker_cpu_us_per_event"] > 0
    else:
        assert worker["broker_cpu_us_per_event"] is None
    assert report["baseline"]["events"] == 600 and report["baseline"]["events_per_s"] > 0
    assert 0 < report["ratio"] == round(worker["events_per_s"] / report["baseline"]["events_per_s"], 4)
    latency = report["latency"]
    assert latency["events"] > 0
    assert 0 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert report["decide"]["events"] == 600 and report["decide"]["events_per_s"] > 0
    rss = report["rss"]
    assert rss["events"] == 1200 and rss["peak_mb"] >= rss["first_mb"] > 0 and rss["samples_mb"]
    assert report["machine"]["cpus"] and report["machine"]["python"]

    for line in (
        "worker drain (events/s)",
        "1 worker(s): CPU of the broker / this script per event (µs)",
        "baseline passthrough (events/s)",
        "latency p50 / p95 / p99 (ms)",
        "decide() in process (events/s)",
        "RSS over 1200 events",
    ):
        assert line in done.stdout, (line, done.stdout)
