#!/usr/bin/env bash
# One entry point for everything: creates the virtual environment on first use (and again whenever
# pyproject.toml changes), then runs a subcommand inside it. `./launch.sh help` lists them (from
# COMMANDS below, the one list).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RESEARCH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# The subcommands, each once, as NAME|WHERE|RUNS|ARGUMENTS|WHAT IT DOES. WHERE: `here` runs in the
# caller's folder (its paths are the caller's), `root` in the repository. RUNS: the python
# arguments (`-m MODULE` and any fixed arguments) that come before the user's, or `shell:FUNCTION`
# for a function of this file.
COMMANDS=(
  "demo|root|-m research.sweeps.runner experiments/demo.py --parallel 2||the first comparison: experiments/demo.py, 8-17 min on a 2-core CPU"
  "train|here|-m research.cli.main|--config configs/listops.py:size=tiny --workdir runs/listops_tiny|train one model (research.cli.main)"
  "sweep|root|-m research.sweeps.runner|experiments/X.py [--parallel K --only KEY=VALUE --dry-run ...]|run a grid of cells (resumable), then its report"
  "report|here|-m research.sweeps.report|runs/X [--best-over AXIS|none]|tables and plots of a sweep -> runs/X/report.md"
  "attention-maps|here|-m research.sweeps.attention_maps|--workdir runs/X/CELL [--example N] [--split test]|a trained run's attention weights as a PNG grid"
  "test|root|shell:run_tests|[pytest arguments]|lint, format check, then the test suite"
  "bench|root|-m research.bench|[--lengths 512,1024 --variants full,local ...]|attention speed and memory -> docs/benchmarks/"
  "python|here||[arguments]|the environment's python"
  "tpu|here|shell:tpu|--name N --zone Z --accelerator v4-32 [--project P] [--version V] [--force] [--dry-run] -- --config configs/listops.py --workdir gs://bucket/run|create or reuse a TPU VM slice, copy this tree to every worker, start training on all of them, detached (a dropped connection cannot stop it)"
  "tpu-log|here|shell:tpu_log|--name N --zone Z [--worker 0]|follow that run's output"
  "tpu-stop|here|shell:tpu_stop|--name N --zone Z|checkpoint and stop it"
)

# Prints COMMANDS: each subcommand with its arguments, and what it does in a column of its own.
usage() {
  local row name where runs arguments what line column=41 pad
  pad="$(printf "%${column}s" "")"
  echo "usage: ./launch.sh SUBCOMMAND [ARGUMENTS]"
  for row in "${COMMANDS[@]}"; do
    IFS='|' read -r name where runs arguments what <<<"$row"
    line="  ./launch.sh $name${arguments:+ $arguments}"
    if ((${#line} < column - 1)); then
      printf "%-${column}s" "$line"
    else
      fold -s -w 98 <<<"$line" | sed -e 's/ *$//' -e '2,$s/^/      /'
      printf '%s' "$pad"
    fi
    fold -s -w $((100 - column)) <<<"$what" | sed -e 's/ *$//' -e "2,\$s/^/$pad/"
  done
} >&2

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

# Runs one subcommand: its shell function, or the environment's python with the row's arguments.
run_command() {
  local command="$1" row name where runs arguments what
  shift
  for row in "${COMMANDS[@]}"; do
    IFS='|' read -r name where runs arguments what <<<"$row"
    [[ "$name" == "$command" ]] || continue
    [[ "$where" == root ]] && cd "$ROOT"
    if [[ "$runs" == shell:* ]]; then
      "${runs#shell:}" "$@"
      return
    fi
    ensure_venv
    read -ra runs <<<"$runs"
    exec "$VENV/bin/python" "${runs[@]}" "$@"
  done
  local names=()
  for row in "${COMMANDS[@]}"; do names+=("${row%%|*}"); done
  echo "error: unknown command '${command}'; valid: $(IFS=,; echo "${names[*]}" | sed 's/,/, /g')" >&2
  usage
  exit 2
}

# Lint, format check, then the test suite.
run_tests() {
  ensure_venv
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  # One worker per core; a test file stays on one worker, so its module fixtures are built once.
  # On a GPU the workers share it: none takes most of its memory up front (JAX's default).
  XLA_PYTHON_CLIENT_PREALLOCATE=false exec "$VENV/bin/python" -m pytest -n auto --dist loadfile "$@"
}

command="${1:-}"
[[ $# -gt 0 ]] && shift
case "$command" in
  -h | --help | help) usage ;;
  *) run_command "$command" "$@" ;;
esac
