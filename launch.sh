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
#   ./launch.sh tpu --name N --zone Z --accelerator v4-32 [--project P] [--version V] [--force]
#       [--dry-run] -- --config configs/listops.py --workdir gs://bucket/run
#                                            create or reuse a TPU VM slice, copy this tree to
#                                            every worker, start training on all of them,
#                                            detached (a dropped connection cannot stop it)
#   ./launch.sh tpu-log --name N --zone Z [--worker 0]    follow that run's output
#   ./launch.sh tpu-stop --name N --zone Z                checkpoint and stop it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RESEARCH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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

# Parses the options shared by tpu, tpu-log and tpu-stop into name, zone, accelerator, project,
# version, worker, force, dry_run; what follows `--` is left in tpu_args.
tpu_options() {
  local subcommand="$1" valid="$2"
  shift 2
  name="" zone="" accelerator="" project="" version="tpu-ubuntu2204-base" worker=0 force=0
  dry_run=0
  tpu_args=()
  while [[ $# -gt 0 ]]; do
    local option="$1"
    case "$option" in
      --) shift; tpu_args=("$@"); break ;;
      --dry-run) dry_run=1; shift; continue ;;
    esac
    if [[ " $valid " != *" $option "* ]]; then
      echo "error: unknown $subcommand option '$option'; valid: $valid --dry-run" >&2
      exit 2
    fi
    if [[ "$option" == --force ]]; then force=1; shift; continue; fi
    [[ $# -ge 2 ]] || { echo "error: $option needs a value" >&2; exit 2; }
    printf -v "${option#--}" '%s' "$2"
    shift 2
  done
  for required in name zone; do
    [[ -n "${!required}" ]] || { echo "error: launch.sh $subcommand needs --$required" >&2; exit 2; }
  done
}

# gcloud's TPU VM command and the --zone/--project arguments, from the parsed options.
tpu_vm() {
  vm=(gcloud compute tpus tpu-vm)
  where=(--zone "$zone")
  [[ -n "$project" ]] && where+=(--project "$project")
  return 0
}

RUN_LOG='~/research/run.log'    # on each worker's own disk: a gs:// workdir cannot be appended to
RUNNING="pgrep -f '[r]esearch[.]main'"  # the brackets keep pgrep from matching this very command

tpu() {
  tpu_options tpu "--name --zone --accelerator --project --version --force" "$@"
  [[ -n "$accelerator" ]] || { echo "error: launch.sh tpu needs --accelerator" >&2; exit 2; }
  [[ " ${tpu_args[*]} " == *" --workdir"* ]] || {
    echo "error: give the train arguments after --, including --workdir gs://BUCKET/PATH" >&2
    exit 2
  }
  tpu_vm
  local archive="${TMPDIR:-/tmp}/research-code.tar.gz"
  # On every worker: refuse if a run is already there (unless --force), unpack, then start the
  # run detached from the ssh session (setsid, nohup), so a dropped connection cannot stop it.
  local remote="set -e;"
  [[ "$force" == 1 ]] || remote+=" if $RUNNING >/dev/null; then echo \"error: a run is already"
  [[ "$force" == 1 ]] || remote+=" running on \$(hostname); stop it with launch.sh tpu-stop, or"
  [[ "$force" == 1 ]] || remote+=" pass --force\" >&2; exit 2; fi;"
  remote+=" mkdir -p ~/research; tar xzf ~/research-code.tar.gz -C ~/research; cd ~/research;"
  remote+=" RESEARCH_EXTRAS=tpu nohup setsid ./launch.sh train --distributed$(printf ' %q' "${tpu_args[@]}")"
  remote+=" > $RUN_LOG 2>&1 < /dev/null &"
  remote+=" echo \"started on \$(hostname); its output: $RUN_LOG\""
  local follow=(./launch.sh tpu-log --name "$name" --zone "$zone")
  [[ -n "$project" ]] && follow+=(--project "$project")

  # Before anything is copied: is a run going on any worker? The check in $remote alone would let
  # the workers without one start, and wait for ever for the processes that refused.
  local busy check="if $RUNNING >/dev/null; then echo \"research-run-on \$(hostname)\"; fi"

  if [[ "$dry_run" == 1 ]]; then
    echo "# create the slice unless it exists:"
    run_or_print "${vm[@]}" describe "$name" "${where[@]}"
    run_or_print "${vm[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" \
      --version "$version"
    if [[ "$force" != 1 ]]; then
      echo "# refuse if a run is going on any worker (each prints research-run-on HOST):"
      run_or_print "${vm[@]}" ssh "$name" --worker=all "${where[@]}" --command "$check"
    fi
    echo "# pack this tree (tracked and untracked, not ignored files):"
    echo "git ls-files -co --exclude-standard -z | tar czf $(printf '%q' "$archive") --null -T -"
  else
    if ! "${vm[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
      "${vm[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" \
        --version "$version"
    fi
    if [[ "$force" != 1 ]]; then
      busy="$("${vm[@]}" ssh "$name" --worker=all "${where[@]}" --command "$check" |
        sed -n 's/.*research-run-on \([^[:space:]]*\).*/\1/p' | tr '\n' ' ')"
      if [[ -n "$busy" ]]; then
        echo "error: a run is already running on ${busy% }; stop it with launch.sh tpu-stop, or" \
          "pass --force" >&2
        exit 2
      fi
    fi
    (cd "$ROOT" && git ls-files -co --exclude-standard -z | tar czf "$archive" --null -T -)
  fi
  run_or_print "${vm[@]}" scp "$archive" "$name:~/research-code.tar.gz" --worker=all "${where[@]}"
  run_or_print "${vm[@]}" ssh "$name" --worker=all "${where[@]}" --command "$remote"
  echo "# follow worker 0's output (Ctrl-C stops following, not the run):" >&2
  printf '%q ' "${follow[@]}" | sed 's/ $/\n/' >&2
}

# Follows a detached run's log on one worker.
tpu_log() {
  tpu_options tpu-log "--name --zone --project --worker" "$@"
  tpu_vm
  run_or_print "${vm[@]}" ssh "$name" "--worker=$worker" "${where[@]}" \
    --command "tail -n +1 -F $RUN_LOG"
}

# SIGTERM to the run on every worker: it saves a checkpoint and exits; `tpu` again resumes it.
tpu_stop() {
  tpu_options tpu-stop "--name --zone --project" "$@"
  tpu_vm
  run_or_print "${vm[@]}" ssh "$name" --worker=all "${where[@]}" \
    --command "pkill -TERM -f '[r]esearch[.]main' || echo \"no run on \$(hostname)\""
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
    # One worker per core; a test file stays on one worker, so its module fixtures are built once.
    exec "$VENV/bin/python" -m pytest -n auto --dist loadfile "$@"
    ;;
  bench)
    ensure_venv
    cd "$ROOT"
    exec "$VENV/bin/python" -m research.bench "$@"
    ;;
  tpu)
    tpu "$@"
    ;;
  tpu-log)
    tpu_log "$@"
    ;;
  tpu-stop)
    tpu_stop "$@"
    ;;
  python)
    ensure_venv
    exec "$VENV/bin/python" "$@"
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    echo "error: unknown command '${command}'; valid: demo, train, sweep, report, attention-maps, test, bench, python, tpu, tpu-log, tpu-stop" >&2
    usage
    exit 2
    ;;
esac
