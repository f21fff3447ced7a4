#!/usr/bin/env bash
# The code-health gates CI runs before the tests (and .pre-commit-config.yaml before a commit):
# ruff (lint and format, 120 columns), mypy (strict on streams/core), import contracts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh >/dev/null
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
echo "lint.sh: ruff, mypy and the import contracts pass"
