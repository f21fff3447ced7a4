#!/usr/bin/env bash
# The whole test suite, from a fresh clone: the system packages it needs (deploy/system-packages.sh, as
# .ci/run installs them: JDK, Maven, chromium, node, promtool), install into .venv, start the local Kafka broker
# (unless one already answers), run pytest (extra arguments go to pytest), stop the broker it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/system-packages.sh
bash deploy/setup.sh
bash deploy/tools.sh  # the AsyncAPI CLI (npm, into .tools/) the suite validates docs/contract/asyncapi.yaml with
started_here=0
if ! bash deploy/kafka/kafka.sh status >/dev/null 2>&1; then
  bash deploy/kafka/kafka.sh start
  started_here=1
fi
stop_broker() { if [ "$started_here" = 1 ]; then bash deploy/kafka/kafka.sh stop; fi; }
trap stop_broker EXIT
.venv/bin/python -m pytest "$@"
