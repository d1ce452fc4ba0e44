#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: system packages, npm ci, build, tests.
# Ends with the line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }
exec node scripts/run-tests.mjs "$@"
