#!/usr/bin/env bash
# Builds the lienthong wheel an image installs (deploy/Dockerfile runs this; tests/test_deploy.py too):
#   bash deploy/wheel.sh production DIR [pip wheel options]   the services a deployment runs: worker,
#        connectors, capture, webhooks, topics, the operator's commands and page. No sandboxes, no demo:
#        `lienthong sandbox` and `lienthong demo` do not exist in it.
#   bash deploy/wheel.sh full DIR [...]                        the same and the sandboxes and the demo
#        (the `sandbox` target, which docker-compose.yml's sandboxes run).
# pyproject.toml lists the packages by pattern ([tool.setuptools.packages.find]); the wheel holds those
# found, so this builds from a copy of the tree with only the kind's packages in it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kind="${1:?usage: deploy/wheel.sh production|full DIR [pip wheel options]}"
out="${2:?usage: deploy/wheel.sh production|full DIR [pip wheel options]}"
shift 2
packages=(common streams amis connectors capture ops cli)
case "$kind" in
  production) ;;
  full) packages+=(sandboxes demo) ;;
  *) echo "deploy/wheel.sh: unknown kind '$kind': production or full" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
cp pyproject.toml README.md "$tree/"
for package in "${packages[@]}"; do
  cp -r "$package" "$tree/$package"
done
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$out"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$@" "$tree"
