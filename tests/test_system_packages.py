"""deploy/system-packages.sh, which both .ci/run and deploy/test.sh run: it installs nothing when every
tool is there, and without root, sudo or apt-get says in one line what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "deploy" / "system-packages.sh"


def tools(tmp_path: Path, *names: str, uid: int = 1000) -> Path:
    """A PATH holding only stand-ins for ``names`` and ``id`` (answering ``uid``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir


def run(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LIENTHONG_CHROMIUM", "DEBIAN_FRONTEND")} | {
        "PATH": str(path)
    }
    return subprocess.run([shutil.which("bash") or "/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True)


def test_nothing_is_installed_when_every_tool_answers(tmp_path):
    done = run(tools(tmp_path, "java", "mvn", "chromium", "node", "npm", "promtool"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_without_root_or_sudo_it_names_what_to_install(tmp_path):
    done = run(tools(tmp_path, "java", "mvn", "node", "npm"))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "system-packages.sh: missing chromium prometheus; install them as root: apt-get install chromium prometheus"
    )


def test_as_root_it_installs_what_is_missing_with_apt_get(tmp_path):
    bin_dir = tools(tmp_path, "java", "mvn", "node", "npm", uid=0)
    calls = tmp_path / "apt-get.calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {calls}\n')
    (bin_dir / "apt-get").chmod(0o755)
    done = run(bin_dir)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        " update -q",
        "noninteractive install -y -q chromium",
        "noninteractive install -y -q --no-install-recommends prometheus",
    ]
