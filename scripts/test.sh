#!/usr/bin/env bash
# The test suite: set up .venv if needed, then run pytest (arguments pass through).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python -m pytest "$@"
