"""The local broker script says clearly what is missing, before it tries anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "kafka" / "kafka.sh"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with every command of /usr/bin and /bin but the missing ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in Path(directory).iterdir():
            target = bin_dir / entry.name
            if entry.name not in missing and not target.exists():
                target.symlink_to(entry)
    return str(bin_dir)


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh cache and an unused port, so nothing of a real broker is touched."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LIENTHONG_CACHE_DIR": str(tmp_path / "c"),
        "LIENTHONG_KAFKA_PORT": "19992",
        **extra,
    }


def test_start_without_java_says_how_to_get_it(tmp_path):
    result = run(script_env(tmp_path, PATH=path_without(tmp_path, "java")), "start")
    assert result.returncode != 0
    assert "java not found" in result.stderr and "JAVA_HOME" in result.stderr


def test_start_with_a_wrong_java_home_names_it(tmp_path):
    result = run(script_env(tmp_path, JAVA_HOME=str(tmp_path / "no-jdk")), "start")
    assert result.returncode != 0
    assert str(tmp_path / "no-jdk") in result.stderr and "bin/java" in result.stderr


def test_first_start_without_maven_says_why_it_is_needed(tmp_path):
    result = run(script_env(tmp_path, PATH=path_without(tmp_path, "mvn")), "start")
    assert result.returncode != 0
    assert "mvn not found" in result.stderr and "Maven Central" in result.stderr


def test_status_of_a_broker_that_is_not_running(tmp_path):
    result = run(script_env(tmp_path), "status")
    assert result.returncode == 1 and "not running on 127.0.0.1:19992" in result.stdout
