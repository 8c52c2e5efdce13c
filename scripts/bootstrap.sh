#!/usr/bin/env bash
# Create .venv (once) and install the project with its pinned CPU torch; re-install when
# pyproject.toml or constraints.txt change. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$venv/.culturemert-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "Installing culturemert and its dependencies into $venv ..." >&2
  "$venv/bin/python" -m pip install --quiet \
    -c "$root/constraints.txt" -e "$root[dev]"
  # HEAR's validator for the tests; without its dependencies, which would pull in TensorFlow
  # (the tests stand a stub in for its one TensorFlow import).
  "$venv/bin/python" -m pip install --quiet --no-deps "hearvalidator==2021.0.2"
  echo "$want" >"$stamp"
fi
export PATH="$venv/bin:$PATH"
