#!/usr/bin/env bash
# One entry point for everything: creates the virtual environment on first use (and again whenever
# pyproject.toml changes), then runs a subcommand inside it.
#
#   ./launch.sh train --config configs/listops.py:size=tiny --workdir runs/listops_tiny
#   ./launch.sh test [pytest arguments]      lint, format check, then the test suite
#   ./launch.sh python [arguments]           the environment's python
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RESEARCH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

ensure_venv() {
  local stamp
  stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  [[ -f "$stamp" ]] && return 0
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: $PYTHON is not Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 2
  fi
  echo "Setting up $VENV (first use; takes a minute or two)..." >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --editable "$ROOT[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

command="${1:-}"
[[ $# -gt 0 ]] && shift
case "$command" in
  train)
    ensure_venv
    exec "$VENV/bin/python" -m research.main "$@"
    ;;
  test)
    ensure_venv
    cd "$ROOT"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  python)
    ensure_venv
    exec "$VENV/bin/python" "$@"
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    echo "error: unknown command '${command}'; valid: train, test, python" >&2
    usage
    exit 2
    ;;
esac
