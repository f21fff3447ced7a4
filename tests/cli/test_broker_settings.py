"""Where every service finds the broker: ``LIENTHONG_KAFKA_PORT`` alone drives them all (one port for
everything), and a ``LIENTHONG_BOOTSTRAP_SERVERS`` that says otherwise is refused in one line; ``-b`` /
``--bootstrap-server`` on the command line (Kafka's tools' option) wins over both."""

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


def test_bootstrap_server_on_the_command_line_wins_over_the_environment(bootstrap, monkeypatch, capsys):
    monkeypatch.setenv("LIENTHONG_KAFKA_PORT", "1")  # nothing listens there
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("LIENTHONG_BROKER_TIMEOUT", "2")
    for argv in (["lag", "-b", bootstrap], ["--bootstrap-server", bootstrap, "lag"]):  # after or before
        assert main([*argv, "--nonzero"]) == 0, capsys.readouterr().err
        assert f"consumer lag on {bootstrap}" in capsys.readouterr().out
    # the command's own wins over the one before it
    assert main(["-b", "127.0.0.1:1", "lag", "-b", bootstrap, "--nonzero"]) == 0
    assert main(["lag", "--nonzero"]) == 2  # without it: the environment's
    assert "no Kafka broker answers at 127.0.0.1:1" in capsys.readouterr().err


def test_every_argument_and_option_of_every_command_says_what_it_is():
    from cli.command import lienthong

    for name, command in lienthong.commands.items():
        assert command.help, name
        for param in command.params:
            assert getattr(param, "help", None), f"lienthong {name}: {param.name} has no help text"
