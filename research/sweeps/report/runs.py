"""A sweep folder's runs as the report reads them: each cell (from sweep.json, or the cell folders
when there is none), what its folder holds, and its value on each of the sweep's axes.

An axis is a grid key: "config" (the config file, shown as its task), "config.<field>" or
"arg.<name>" (a config-file argument).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from research.cli.config_spec import parse_spec
from research.errors import UserError
from research.flat import flatten
from research.sweeps.axes import independent_keys, varying_keys
from research.sweeps.cells import NOT_STARTED, Cell, read_json, status

TASK_AXES = ("config", "config.task")  # the config file and the task: both show the task

VARIANT_AXIS = "config.model.attention"
# A variant's own options (config.model.attention_options.<variant>.<option>) label its rows, and
# do not apply to the other variants' rows.
OPTION_PREFIX = "config.model.attention_options."
NOT_APPLICABLE = "–"
# Axes that describe the model rather than the problem: rows of the main table, not columns.
ROW_AXIS_NAMES = ("attention", "positional", "position")
# The training protocol (configs' `pretrain` argument: none, causal, masked): rows too, so a
# variant's protocols sit side by side under every task, with their difference (tables.py).
PROTOCOL_AXIS_NAMES = ("pretrain",)
# Flattened config keys that differ between cells without being an experimental choice.
IGNORED_KEY_ENDINGS = ("dir", "path", "source")


# ----------------------------------------------------------------------------- reading a sweep


@dataclass
class Run:
    """A cell of the sweep and what its folder holds: how far it got (research.sweeps.cells.status)
    and, once it started, its config and numbers; `axes` are its values on the report's axes."""

    cell: Cell
    status: str = NOT_STARTED
    config: dict = field(default_factory=dict)  # flattened config.json; {} before the run starts
    results: dict | None = None
    error: str = ""
    returncode: int | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # validation (step, accuracy)
    axes: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cell.name

    @property
    def directory(self) -> Path:
        return Path(self.cell.workdir)


def read_validation_curve(path: Path) -> list[tuple[int, float]]:
    """Validation (step, accuracy) pairs of a metrics.jsonl in step order, one per step; a
    truncated last line is skipped.

    metrics.jsonl is append-only, so a run resumed from a checkpoint older than its last
    evaluation writes those steps again: the last record of a step is the run that went on.
    """
    by_step = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("split") == "validation":
            by_step[int(record["step"])] = float(record["accuracy"])
    return sorted(by_step.items())


def read_run(cell: Cell) -> Run:
    """Everything a cell folder holds (any file may be missing: the run may not have started)."""
    directory = Path(cell.workdir)
    run = Run(cell, status(directory))
    run.config = flatten(read_json(directory / "config.json") or {})
    run.results = read_json(directory / "results.json")
    failed = read_json(directory / "failed.json")
    if failed is not None:
        lines = str(failed.get("error") or "").strip().splitlines()
        run.error = lines[-1] if lines else "(no error message)"
        run.returncode = failed.get("returncode")
    run.curve = read_validation_curve(directory / "metrics.jsonl")
    return run


def no_runs_error(sweep_dir: Path) -> UserError:
    return UserError(
        f"{sweep_dir} holds no runs (no <cell>/config.json); run ./launch.sh sweep ... first"
    )


def load_sweep(sweep_dir: Path) -> tuple[str, list[str], list[Run]]:
    """(experiment name, swept axes, runs): from sweep.json, else from the cell folders."""
    sweep = read_json(sweep_dir / "sweep.json")
    if sweep and sweep.get("cells"):
        runs = [read_run(Cell.from_dict(record, sweep_dir)) for record in sweep["cells"]]
        return str(sweep.get("experiment") or sweep_dir.name), list(sweep.get("axes", [])), runs
    folders = sorted(p.parent for p in sweep_dir.glob("*/config.json"))
    folders += sorted(
        p.parent for p in sweep_dir.glob("*/failed.json") if not (p.parent / "config.json").exists()
    )
    if not folders:
        raise no_runs_error(sweep_dir)
    records = [
        {**(read_json(folder / "cell.json") or {}), "name": folder.name} for folder in folders
    ]
    runs = [read_run(Cell.from_dict(record, sweep_dir)) for record in records]
    return sweep_dir.name, infer_axes(runs), runs


def infer_axes(runs: list[Run]) -> list[str]:
    """The config fields that differ between runs (paths aside), fewest values first, less those
    that follow from others (`axes.independent_keys`); for sweep folders without sweep.json."""
    configs = [{f"config.{k}": v for k, v in r.config.items()} for r in runs if r.config]
    keys = [k for k in varying_keys(configs) if not k.lower().endswith(IGNORED_KEY_ENDINGS)]
    by_count = sorted(keys, key=lambda k: (len({json.dumps(c.get(k)) for c in configs}), k))
    return independent_keys(prioritized(by_count), configs)


def prioritized(axes: list[str]) -> list[str]:
    """The task, the variant and the seed first: those are the axes a reader looks for."""
    first = [a for a in (*TASK_AXES, VARIANT_AXIS) if a in axes]
    first += [a for a in axes if is_seed(a) and a not in first]
    return first + [a for a in axes if a not in first]


def field_name(axis: str) -> str:
    """The field an axis sets, without its path: "config.model.attention_options.local.window"
    -> "window". It says what kind of axis it is (a seed, a row of the main table)."""
    return axis.rsplit(".", 1)[-1]


def is_seed(axis: str) -> bool:
    return field_name(axis) == "seed"


# ----------------------------------------------------------------------------- axis values


def number(value: object) -> object:
    """ "16" -> 16, "0.5" -> 0.5 (config arguments arrive as strings); anything else unchanged."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def task_label(task: str, resolution: object = None) -> str:
    """LRA's name for a task: pathfinder at resolution 128 is Path-X, at 64 pathfinder64."""
    if task == "pathfinder" and resolution not in (None, 32, "32"):
        return "pathx" if int(resolution) == 128 else f"pathfinder{resolution}"
    return task


def run_task(run: Run) -> str | None:
    """The run's task label, from config.json once the run started, else from its config file."""
    if run.config.get("task"):
        return task_label(run.config["task"], run.config.get("task_options.resolution"))
    if not run.cell.spec:
        return None
    path, arguments = parse_spec(run.cell.spec)
    return task_label(Path(path).stem, arguments.get("resolution"))


def axis_value(run: Run, axis: str) -> object:
    """The value `run` takes on `axis` ("config", "config.<field>" or "arg.<name>"), or None."""
    if axis in TASK_AXES:
        return run_task(run)
    if axis.startswith(OPTION_PREFIX):
        variant = axis.removeprefix(OPTION_PREFIX).split(".")[0]
        if axis_value(run, VARIANT_AXIS) not in (None, variant):
            return NOT_APPLICABLE
    short = axis.removeprefix("config.").removeprefix("arg.")
    if axis.startswith("config.") and short in run.config:
        return number(run.config[short])
    if axis in run.cell.overrides:
        return number(run.cell.overrides[axis])
    if axis.startswith("arg."):
        return number(parse_spec(run.cell.spec)[1].get(short))
    return None


def assign_axes(runs: list[Run], axes: list[str]) -> None:
    """Fills `run.axes`; an axis value unknown for a run yet (not started) but shared by every
    run that knows it (the variant of a one-variant sweep) is taken to be that value."""
    for axis in axes:
        values = [axis_value(run, axis) for run in runs]
        known = {json.dumps(v) for v in values if v is not None}
        shared = next((v for v in values if v is not None), None) if len(known) == 1 else None
        for run, value in zip(runs, values, strict=True):
            run.axes[axis] = shared if value is None else value
