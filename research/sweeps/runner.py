"""Runs an experiment file's grid of training runs ("cells"), resumes it, and reports it.

    python -m research.sweeps.runner experiments/X.py [--workdir runs/X] [--only KEY=VALUE ...]
        [--parallel K] [--dry-run] [--executor local|slurm|submitit_local] [--shard I/N]
        [--slurm KEY=VALUE ...] [--no-report]

An experiment file holds a docstring, `CONFIG = "configs/recall.py:size=tiny"` (the base config
spec), `def get_hyper(h)` returning a grid built with `research.sweeps.hyper` (LRA's sweep
grammar), and optionally `TPU = {"accelerator": "v4-8"}` (its cells are meant for a TPU slice;
`--dry-run` then also prints the `launch.sh tpu` commands) and `BEST_OVER = "<swept axis>"` (the
report takes, per group, the value of that axis with the best validation accuracy: e.g.
"config.optimizer.learning_rate").

Every cell's config is resolved and every dataset built here, once, before any cell starts, so a bad
cell fails alone with a one-line error and parallel cells never generate the same data at once.
Each cell then trains in its own process (`research.cli.main`) in `<workdir>/<cell name>`; with
`--parallel K` on a machine with at least K CPUs, each of the K at once runs on its own 1/K of
them (executors.cpu_slots), so that their thread pools do not preempt one another.
Running the same command again skips finished cells and resumes interrupted ones from their
checkpoints.

Files, read by `research.sweeps.report`: `<workdir>/sweep.json` (the experiment, its axes, its
BEST_OVER and every cell of the full grid) and one folder per cell (research/sweeps/cells.py says
what it holds).

The grid is in research/sweeps/grid.py, the cell record and its status in research/sweeps/cells.py,
the executors in research/sweeps/executors.py; this module prepares the cells, runs them through an
executor and summarises the outcome.
"""

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from research.cli.config_cli import parse_config_flags
from research.errors import (
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    UserError,
    fail,
    print_error,
)
from research.sweeps import executors
from research.sweeps.axes import varying_keys
from research.sweeps.cells import FAILED, NOT_STARTED, Cell, is_done, record_failure, write_json
from research.sweeps.grid import Experiment, load_experiment, make_cells, select, tpu_command


def print_dry_run(experiment: Experiment, cells: list[Cell], total: int) -> int:
    """Lists each cell and its command, checking its config as the run will (`resolve`) and
    marking the cells that would fail; writes nothing. Returns the exit status: EXIT_FAILED when
    a cell is invalid, as the run itself would end. Data is checked only when the sweep runs (it
    may live on the machine that runs it)."""
    print(f"# {len(cells)} of {total} cells of {experiment.path} (configs checked, data not)")
    invalid = 0
    for cell in cells:
        print(cell.name)
        try:
            resolve(cell)
        except UserError as error:
            print(f"  INVALID: {error}")
            invalid += 1
        print(f"  {cell.launch_line()}")
        if experiment.tpu:
            print(f"  {shlex.join(tpu_command(cell, experiment.tpu))}")
    if invalid:
        print(f"# {invalid} of {len(cells)} cells are invalid and would fail")
        return EXIT_FAILED
    return 0


# ----------------------------------------------------------------------------- preparation


def declared_best_over(experiment: Experiment) -> str | None:
    """The experiment file's BEST_OVER, checked to be one of its swept axes (UserError, one line);
    None when it sets none."""
    if experiment.best_over is not None:
        from research.sweeps.report.tables import check_best_over  # the report's rule, lazily

        check_best_over(
            experiment.best_over, varying_keys(experiment.grid), f"{experiment.path}: BEST_OVER"
        )
    return experiment.best_over


def write_sweep_json(
    experiment: Experiment, cells: list[Cell], workdir: str, best_over: str | None = None
) -> None:
    """The full grid (not only this invocation's cells, so shards agree on it) for the report."""
    os.makedirs(workdir, exist_ok=True)
    content = {
        "experiment": experiment.path,
        "config": experiment.config,
        "axes": varying_keys(experiment.grid),
        "best_over": best_over,
        "cells": [cell.to_dict() for cell in cells],
    }
    write_json(Path(workdir, "sweep.json"), content)


def resolve(cell: Cell):
    """The cell's config, built by ml_collections exactly as research.cli.main will build it, and
    checked as research.training.train will check it; UserError (one line) if it is not valid."""
    from absl import flags
    from ml_collections import config_flags

    from research.training import train

    argv = ["sweep", *cell.config_flags()]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=values, lock_config=True, sys_argv=argv
    )
    parse_config_flags(values, argv)
    config = values.config
    return train.resolve(config).config


def build_datasets(cells: list[Cell], configs: dict[str, Any]) -> dict[str, str]:
    """Builds each distinct dataset once, here and one after the other, so that parallel cells
    only read it; returns {cell name: one-line error} for the cells whose data failed."""
    from research import tasks
    from research.training import train

    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        config = configs[cell.name]
        options = json.dumps(config.task_options.to_dict(), sort_keys=True, default=str)
        key = json.dumps([config.task, options, tasks.data_dir(config.data_dir)])
        groups.setdefault(key, []).append(cell)
    errors = {}
    for group in groups.values():
        config = configs[group[0].name]
        print(f"data for {config.task} ({len(group)} cells): building or checking", flush=True)
        try:
            builder = tasks.prepare_builder(
                tasks.get_task(config.task), config.task_options, config.data_dir
            )
        except (UserError, OSError) as error:  # e.g. a missing source archive
            errors.update({cell.name: str(error).splitlines()[0] for cell in group})
            continue
        for cell in group:
            try:
                train.check_lengths(builder, configs[cell.name])
            except UserError as error:
                errors[cell.name] = str(error)
    return errors


def launchable(cell: Cell, parallel: int) -> Cell:
    """The cell as the executors run it: from this directory, and with several runs on one GPU,
    without each preallocating most of its memory."""
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if parallel > 1 else {}
    env = {k: v for k, v in env.items() if k not in os.environ}
    return dataclasses.replace(cell, cwd=os.getcwd(), env=env)


@dataclasses.dataclass
class Outcome:
    counts: dict[str, int]
    failed: dict[str, str]  # name -> one-line error
    interrupted: bool


def run_sweep(
    cells: list[Cell], executor: str, parallel: int, slurm: dict[str, Any], workdir: str
) -> Outcome:
    """Skips finished cells, resolves and prepares the others, runs them, prints a summary."""
    progress = executors.Progress(total=len(cells), parallel=parallel)
    outcome = Outcome(dict.fromkeys(("finished", "skipped", "failed"), 0), {}, False)
    todo = []
    for cell in cells:
        if is_done(cell):
            progress.line(cell.name, "skipped (finished)")
            outcome.counts["skipped"] += 1
        else:
            todo.append(cell)
    errors = prepare(todo)
    jobs = [launchable(cell, parallel) for cell in todo]
    for cell in [cell for cell in jobs if cell.name in errors]:
        record_failure(cell, EXIT_USAGE, errors[cell.name])
        progress.line(cell.name, f"FAILED: {errors[cell.name]}")
    jobs = [cell for cell in jobs if cell.name not in errors]
    progress.to_run = len(jobs)
    results, outcome.interrupted = execute(jobs, executor, parallel, slurm, workdir, progress)
    for cell in jobs:
        result = results.get(cell.name, {"status": NOT_STARTED})
        outcome.counts[result["status"]] = outcome.counts.get(result["status"], 0) + 1
        if result["status"] == FAILED:
            record_failure(cell, result["returncode"], result["error"])
            errors[cell.name] = result["error"]
    outcome.failed = {cell.name: errors[cell.name] for cell in cells if cell.name in errors}
    outcome.counts["failed"] = len(outcome.failed)
    print_summary(outcome, workdir)
    return outcome


def prepare(cells: list[Cell]) -> dict[str, str]:
    """Resolves every cell's config and builds its data; {name: one-line error} of those that
    cannot run."""
    configs, errors = {}, {}
    for cell in cells:
        try:
            configs[cell.name] = resolve(cell)
        except UserError as error:
            errors[cell.name] = str(error)
    errors.update(build_datasets([cell for cell in cells if cell.name in configs], configs))
    return errors


def execute(
    jobs: list[Cell],
    executor: str,
    parallel: int,
    slurm: dict[str, Any],
    workdir: str,
    progress: executors.Progress,
) -> tuple[dict[str, dict], bool]:
    """Runs the jobs on the chosen executor: ({name: result}, whether a signal stopped it)."""
    if executor == "local":
        return executors.run_local(jobs, parallel, progress)
    if not jobs:
        return {}, False
    cluster = "local" if executor == "submitit_local" else "slurm"
    folder = os.path.join(workdir, "submitit")
    return executors.run_submitit(jobs, cluster, slurm, folder, progress)


def print_summary(outcome: Outcome, workdir: str) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in outcome.counts.items() if n or
                       status in ("finished", "failed"))  # fmt: skip
    print(f"\nsweep {workdir}: {counts}")
    for name, error in outcome.failed.items():
        print(f"  FAILED {name}: {error}")
    if outcome.interrupted:
        print("stopped by a signal; run the same command again to resume")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        experiment = load_experiment(args.experiment)
        best_over = declared_best_over(experiment)
        workdir = args.workdir or os.path.join("runs", Path(args.experiment).stem)
        all_cells = make_cells(experiment, workdir)
        cells = select(all_cells, args.only, args.shard)
        slurm = executors.parse_parameters(args.slurm)
        if args.parallel < 1:
            raise UserError(f"--parallel {args.parallel} is not valid; it must be >= 1")
    except UserError as error:
        print_error(error)
        return EXIT_USAGE
    if args.dry_run:
        return print_dry_run(experiment, cells, len(all_cells))
    write_sweep_json(experiment, all_cells, workdir, best_over)
    try:
        outcome = run_sweep(cells, args.executor, args.parallel, slurm, workdir)
    except KeyboardInterrupt:  # while resolving or building data: nothing has started yet
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    except UserError as error:
        print_error(error)
        return EXIT_USAGE
    if outcome.interrupted:
        return EXIT_PREEMPTED
    if not args.no_report:
        from research.sweeps import report

        table = report.write_report(workdir, best_over)
        print(f"\nTest accuracy (%), mean ± std over seeds (seeds):\n{table}\n")
        print(f"report, plots and attention maps: {os.path.join(workdir, 'report.md')}")
    return EXIT_FAILED if outcome.failed else 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes are the project's one `error:` line (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="./launch.sh sweep", description=__doc__.split("\n\n")[0].strip())
    add = parser.add_argument
    add("experiment", help="an experiment file, e.g. experiments/attention.py")
    add("--workdir", help="the sweep's folder (default: runs/<experiment file stem>)")
    add(
        "--only",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run only the cells with this value; repeatable",
    )
    add(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="cells run at once (local executor), each on its own share of the CPUs",
    )
    add("--dry-run", action="store_true", help="print each cell's command; run and write nothing")
    add(
        "--executor",
        choices=("local", "slurm", "submitit_local"),
        default="local",
        help="where cells run: local processes, or one submitit job array",
    )
    add("--shard", metavar="I/N", help="run the cells whose position in the grid %% N == I")
    add(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a submitit parameter, e.g. slurm_partition=gpu or timeout_min=120",
    )
    add("--no-report", action="store_true", help="skip writing the report")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
