#!/usr/bin/env bash
# One entry point for everything: creates the virtual environment on first use (and again whenever
# pyproject.toml changes), then runs a subcommand inside it.
#
#   ./launch.sh demo                         the first comparison: experiments/demo.py, ~10 min
#   ./launch.sh train --config configs/listops.py:size=tiny --workdir runs/listops_tiny
#   ./launch.sh sweep experiments/X.py [--parallel K --only KEY=VALUE --dry-run ...]
#                                            run a grid of cells (resumable), then its report
#   ./launch.sh report runs/X                tables and plots of a sweep -> runs/X/report.md
#   ./launch.sh attention-maps --workdir runs/X/CELL [--example N] [--split test]
#                                            a trained run's attention weights as a PNG grid
#   ./launch.sh test [pytest arguments]      lint, format check, then the test suite
#   ./launch.sh bench [--lengths 512,1024 --variants full,local ...]
#                                            attention speed and memory -> docs/benchmarks/
#   ./launch.sh python [arguments]           the environment's python
#   ./launch.sh tpu --name N --zone Z --accelerator v4-32 [--project P] [--version V] [--dry-run]
#       -- --config configs/listops.py --workdir gs://bucket/run
#                                            create or reuse a TPU VM slice, copy this tree to
#                                            every worker, install, train on all workers at once
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RESEARCH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

ensure_venv() {
  local stamp extras="${RESEARCH_EXTRAS:-test}"
  stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" <(echo "$extras") | sha256sum | cut -c1-16)"
  [[ -f "$stamp" ]] && return 0
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: $PYTHON is not Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 2
  fi
  echo "Setting up $VENV (first use; takes a minute or two)..." >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --editable "$ROOT[$extras]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

# Prints a command (quoted so that it can be pasted) with --dry-run, runs it otherwise.
run_or_print() {
  if [[ "$dry_run" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

tpu() {
  local name="" zone="" accelerator="" project="" version="tpu-ubuntu2204-base"
  dry_run=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name | --zone | --accelerator | --project | --version)
        [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
        local key="${1#--}"
        printf -v "$key" '%s' "$2"
        shift 2
        ;;
      --dry-run) dry_run=1; shift ;;
      --) shift; break ;;
      *)
        echo "error: unknown tpu option '$1'; valid: --name --zone --accelerator --project" \
          "--version --dry-run, then -- and the train arguments" >&2
        exit 2
        ;;
    esac
  done
  for required in name zone accelerator; do
    [[ -n "${!required}" ]] || { echo "error: launch.sh tpu needs --$required" >&2; exit 2; }
  done
  [[ " $* " == *" --workdir"* ]] || {
    echo "error: give the train arguments after --, including --workdir gs://BUCKET/PATH" >&2
    exit 2
  }
  local vm=(gcloud compute tpus tpu-vm) where=(--zone "$zone")
  [[ -n "$project" ]] && where+=(--project "$project")
  local archive="${TMPDIR:-/tmp}/research-code.tar.gz"
  local remote
  remote="set -e; mkdir -p ~/research; tar xzf ~/research-code.tar.gz -C ~/research; cd ~/research;"
  remote+=" RESEARCH_EXTRAS=tpu ./launch.sh train --distributed$(printf ' %q' "$@")"

  if [[ "$dry_run" == 1 ]]; then
    echo "# create the slice unless it exists:"
    run_or_print "${vm[@]}" describe "$name" "${where[@]}"
    run_or_print "${vm[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" \
      --version "$version"
    echo "# pack this tree (tracked and untracked, not ignored files):"
    echo "git ls-files -co --exclude-standard -z | tar czf $(printf '%q' "$archive") --null -T -"
  else
    if ! "${vm[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
      "${vm[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" \
        --version "$version"
    fi
    (cd "$ROOT" && git ls-files -co --exclude-standard -z | tar czf "$archive" --null -T -)
  fi
  run_or_print "${vm[@]}" scp "$archive" "$name:~/research-code.tar.gz" --worker=all "${where[@]}"
  run_or_print "${vm[@]}" ssh "$name" --worker=all "${where[@]}" --command "$remote"
}

command="${1:-}"
[[ $# -gt 0 ]] && shift
case "$command" in
  train)
    ensure_venv
    exec "$VENV/bin/python" -m research.main "$@"
    ;;
  sweep)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m research.sweep "$@"
    ;;
  demo)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m research.sweep experiments/demo.py --parallel 2 "$@"
    ;;
  report)
    ensure_venv
    exec "$VENV/bin/python" -m research.report "$@"
    ;;
  attention-maps)
    ensure_venv
    exec "$VENV/bin/python" -m research.attention_maps "$@"
    ;;
  test)
    ensure_venv
    cd "$ROOT"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  bench)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m research.bench "$@"
    ;;
  tpu)
    tpu "$@"
    ;;
  python)
    ensure_venv
    exec "$VENV/bin/python" "$@"
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    echo "error: unknown command '${command}'; valid: demo, train, sweep, report, attention-maps, test, bench, python, tpu" >&2
    usage
    exit 2
    ;;
esac
