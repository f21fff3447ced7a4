#!/usr/bin/env bash
# Set up and run the whole thing on this machine: install into .venv, then `lienthong demo`, which
# starts the local Kafka broker, creates the contract's topics, runs the stream processor, both
# sandboxes and both connectors, works a scripted business day across the two systems, prints what
# synced and where to look, and keeps running (Ctrl-C stops it; `.venv/bin/lienthong kafka stop`
# stops the broker). Extra arguments go to `lienthong demo` (--exit, --crm-port, --acct-port).
# Run it as often as you like: each demo run has topics and files of its own and clears the earlier
# runs' of this checkout (README, "Run it"), so every run ends the same way.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh
exec .venv/bin/lienthong demo "$@"
