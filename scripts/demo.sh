#!/usr/bin/env bash
# The main job: set up .venv if needed, then run `culturemert demo` (arguments pass through).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec culturemert demo "$@"
