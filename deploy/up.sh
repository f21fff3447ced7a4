#!/usr/bin/env bash
# Set up and run the main job on this machine: install into .venv, start the local Kafka broker,
# create the contract's topics, run the stream processor in the foreground (Ctrl-C stops it;
# `.venv/bin/lienthong kafka stop` stops the broker).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh
.venv/bin/lienthong kafka start
.venv/bin/lienthong topics create
exec .venv/bin/lienthong worker
