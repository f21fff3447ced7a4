"""Where every service finds the broker: ``LIENTHONG_KAFKA_PORT`` alone drives them all (one port for
everything), and a ``LIENTHONG_BOOTSTRAP_SERVERS`` that says otherwise is refused in one line."""

from __future__ import annotations

import pytest

from cli.main import main
from common.settings import KafkaSettings

pytestmark = pytest.mark.broker


def test_the_local_broker_port_alone_drives_every_service_and_a_mismatch_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("LIENTHONG_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("LIENTHONG_KAFKA_PORT", "19993")
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:19993"
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:19993")
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:19993"  # saying both, the same: fine
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert main(["lag"]) == 2
    said = capsys.readouterr().err
    assert "LIENTHONG_KAFKA_PORT=19993 but LIENTHONG_BOOTSTRAP_SERVERS=127.0.0.1:9092" in said
    assert "Set only LIENTHONG_KAFKA_PORT" in said and "Traceback" not in said
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "kafka.example.com:9092")  # a remote cluster: no local port
    assert KafkaSettings().bootstrap_servers == "kafka.example.com:9092"
