"""``lienthong kafka status --json``: whether the local broker runs, for a script (exit 0 running, 1 not)."""

from __future__ import annotations

import socket

import orjson

from cli.main import main


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_status_as_json_says_a_broker_that_does_not_run(capsys) -> None:
    where = f"127.0.0.1:{free_port()}"
    assert main(["kafka", "status", "--json", "-b", where]) == 1
    document = orjson.loads(capsys.readouterr().out)
    assert document == {"running": False, "bootstrap_servers": where, "said": [f"kafka.sh: not running on {where}"]}


def test_json_is_only_for_status(capsys) -> None:
    assert main(["kafka", "stop", "--json", "-b", f"127.0.0.1:{free_port()}"]) == 2
    assert capsys.readouterr().err == "lienthong: --json is for `lienthong kafka status`\n"
