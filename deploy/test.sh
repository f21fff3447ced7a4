#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install into .venv, start the local Kafka broker
# (unless one already answers), run pytest (extra arguments go to pytest), stop the broker it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh
# the AsyncAPI CLI the suite validates docs/contract/asyncapi.yaml with (that test skips without node)
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  bash deploy/tools.sh
else
  echo "test.sh: no node/npm: the AsyncAPI CLI check is skipped (Debian: apt-get install nodejs npm)"
fi
started_here=0
if ! bash deploy/kafka/kafka.sh status >/dev/null 2>&1; then
  bash deploy/kafka/kafka.sh start
  started_here=1
fi
stop_broker() { if [ "$started_here" = 1 ]; then bash deploy/kafka/kafka.sh stop; fi; }
trap stop_broker EXIT
.venv/bin/python -m pytest "$@"
