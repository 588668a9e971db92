"""The sweep report: what a sweep folder's runs add up to, as tables, a CSV and plots.

`python -m research.report runs/X` (or `write_report("runs/X")`, which the sweep runner calls)
reads every cell folder `runs/X/<cell>/` (config.json, results.json, metrics.jsonl, failed.json,
cell.json, and runs/X/sweep.json when the sweep runner wrote one) and writes into runs/X:

- report.md: a main table (one row per attention variant, one column per value of the other
  swept axes except the seed; test accuracy in %, mean ± sample std (n)); for LRA tasks an Avg
  column and the published Transformer row; a table of best validation accuracy, speed, memory and
  size; the cells that are running, not started or failed (never averaged in); the plots.
- results.csv: one row per (variant, other axes) group with finished runs.
- speed_accuracy.png, validation_curves.png and accuracy_vs_<axis>.png per numeric axis.

Only finished runs (those with results.json) are averaged; the seed axis is what is averaged over.
"""

import csv
import datetime
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.errors import UserError
from research.flat import flatten
from research.hyper import independent_keys

# LRA's tasks in its Table 1 order; our label for each (pathfinder at resolution 128 is Path-X).
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
LRA_TITLES = {
    "listops": "ListOps",
    "text": "Text",
    "retrieval": "Retrieval",
    "image": "Image",
    "pathfinder": "Pathfinder",
    "pathx": "Path-X",
}
# Tay et al. 2020, "Long Range Arena", arXiv 2011.04006, Table 1 (accuracy %; Path-X: every model
# failed, so LRA's average leaves it out, and so does ours).
LRA_TRANSFORMER = {
    "listops": 36.37,
    "text": 64.27,
    "retrieval": 57.46,
    "image": 42.44,
    "pathfinder": 71.40,
    "pathx": None,
}
LRA_CITATION = "Transformer (LRA Table 1, Tay et al. 2020)"

VARIANT_AXIS = "config.model.attention"
# A variant's own options (config.model.attention_options.<variant>.<option>) label its rows, and
# do not apply to the other variants' rows.
OPTION_PREFIX = "config.model.attention_options."
NOT_APPLICABLE = "–"
# Axes that describe the model rather than the problem: rows of the main table, not columns.
ROW_AXIS_NAMES = ("attention", "positional", "position")
# Flattened config keys that differ between cells without being an experimental choice.
IGNORED_KEY_ENDINGS = ("dir", "path", "source")

FINISHED, RUNNING, NOT_STARTED, FAILED = "finished", "running", "not started", "failed"


# ----------------------------------------------------------------------------- reading a sweep


@dataclass
class Cell:
    """One run of the sweep: where it lives, what it was asked to be, and how far it got."""

    name: str
    directory: Path
    spec: str = ""  # the config file and its arguments, as the sweep gave them
    overrides: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # flattened config.json; {} before the run starts
    results: dict | None = None
    error: str = ""
    returncode: int | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # validation (step, accuracy)
    axes: dict[str, object] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """results.json wins over failed.json: a failed cell that a later attempt finished."""
        if self.results is not None:
            return FINISHED
        if self.error or self.returncode is not None:
            return FAILED
        return RUNNING if self.config else NOT_STARTED


def read_json(path: Path) -> dict | None:
    """The file's JSON object, or None when it is missing or half written (a run being killed)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_validation_curve(path: Path) -> list[tuple[int, float]]:
    """Validation (step, accuracy) pairs of a metrics.jsonl; a truncated last line is skipped."""
    curve = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return curve
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("split") == "validation":
            curve.append((int(record["step"]), float(record["accuracy"])))
    return curve


def read_cell(directory: Path, name: str, spec: str = "", overrides=None) -> Cell:
    """Everything a cell folder holds (any file may be missing: the run may not have started)."""
    cell_json = read_json(directory / "cell.json") or {}
    cell = Cell(
        name=name,
        directory=directory,
        spec=str(spec or cell_json.get("config") or ""),
        overrides=dict(overrides or cell_json.get("overrides") or {}),
    )
    cell.config = flatten(read_json(directory / "config.json") or {})
    cell.results = read_json(directory / "results.json")
    failed = read_json(directory / "failed.json")
    if failed is not None:
        lines = str(failed.get("error") or "").strip().splitlines()
        cell.error = lines[-1] if lines else "(no error message)"
        cell.returncode = failed.get("returncode")
    cell.curve = read_validation_curve(directory / "metrics.jsonl")
    return cell


def no_runs_error(sweep_dir: Path) -> UserError:
    return UserError(
        f"{sweep_dir} holds no runs (no <cell>/config.json); run ./launch.sh sweep ... first"
    )


def load_sweep(sweep_dir: Path) -> tuple[str, list[str], list[Cell]]:
    """(experiment name, swept axes, cells): from sweep.json, else from the cell folders."""
    sweep = read_json(sweep_dir / "sweep.json")
    if sweep and sweep.get("cells"):
        cells = [
            read_cell(sweep_dir / c["name"], c["name"], c.get("config", ""), c.get("overrides"))
            for c in sweep["cells"]
        ]
        return str(sweep.get("experiment") or sweep_dir.name), list(sweep.get("axes", [])), cells
    folders = sorted(p.parent for p in sweep_dir.glob("*/config.json"))
    folders += sorted(
        p.parent for p in sweep_dir.glob("*/failed.json") if not (p.parent / "config.json").exists()
    )
    if not folders:
        raise no_runs_error(sweep_dir)
    cells = [read_cell(folder, folder.name) for folder in folders]
    return sweep_dir.name, infer_axes(cells), cells


def infer_axes(cells: list[Cell]) -> list[str]:
    """The config fields that differ between cells (paths aside), less those that follow from
    others (see `hyper.independent_keys`); for sweep folders without sweep.json."""
    configs = [{f"config.{k}": v for k, v in c.config.items()} for c in cells if c.config]
    keys = {k for config in configs for k in config if not k.lower().endswith(IGNORED_KEY_ENDINGS)}
    by_count = sorted(keys, key=lambda k: (len({json.dumps(c.get(k)) for c in configs}), k))
    return independent_keys(prioritized(by_count), configs)


def prioritized(axes: list[str]) -> list[str]:
    """The task, the variant and the seed first: those are the axes a reader looks for."""
    first = [a for a in ("config", "config.task", VARIANT_AXIS) if a in axes]
    first += [a for a in axes if is_seed(a) and a not in first]
    return first + [a for a in axes if a not in first]


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


def spec_arguments(spec: str) -> dict[str, str]:
    """ "configs/recall.py:pairs=16,size=tiny" -> {"pairs": "16", "size": "tiny"}."""
    _, _, arguments = spec.partition(":")
    pairs = (item.partition("=") for item in arguments.split(",") if item)
    return {key: value for key, _, value in pairs}


def cell_task(cell: Cell) -> str | None:
    """The cell's task label, from config.json once the run started, else from its config file."""
    if cell.config.get("task"):
        return task_label(cell.config["task"], cell.config.get("task_options.resolution"))
    if not cell.spec:
        return None
    stem = Path(cell.spec.partition(":")[0]).stem
    return task_label(stem, spec_arguments(cell.spec).get("resolution"))


def axis_value(cell: Cell, axis: str) -> object:
    """The value `cell` takes on `axis` ("config", "config.<field>" or "arg.<name>"), or None."""
    if axis in ("config", "config.task"):
        return cell_task(cell)
    if axis.startswith(OPTION_PREFIX):
        variant = axis.removeprefix(OPTION_PREFIX).split(".")[0]
        if axis_value(cell, VARIANT_AXIS) not in (None, variant):
            return NOT_APPLICABLE
    short = axis.removeprefix("config.").removeprefix("arg.")
    if axis.startswith("config.") and short in cell.config:
        return number(cell.config[short])
    if axis in cell.overrides:
        return number(cell.overrides[axis])
    if axis.startswith("arg."):
        return number(spec_arguments(cell.spec).get(short))
    return None


def short_name(axis: str) -> str:
    """ "config.model.attention_options.local.window" -> "window"; "config" -> "task"."""
    return "task" if axis in ("config", "config.task") else axis.rsplit(".", 1)[-1]


def is_seed(axis: str) -> bool:
    return short_name(axis) == "seed"


def split_axes(axes: list[str]) -> tuple[list[str], list[str]]:
    """(row axes, column axes): the variant, its options and the position scheme are rows;
    seeds are averaged."""
    rows = [VARIANT_AXIS] + [
        a
        for a in axes
        if a != VARIANT_AXIS and (short_name(a) in ROW_AXIS_NAMES or a.startswith(OPTION_PREFIX))
    ]
    columns = [a for a in axes if a not in rows and not is_seed(a)]
    return rows, columns


def assign_axes(cells: list[Cell], axes: list[str]) -> None:
    """Fills `cell.axes`; an axis value unknown for a cell yet (not started) but shared by every
    cell that knows it (the variant of a one-variant sweep) is taken to be that value."""
    for axis in axes:
        values = [axis_value(cell, axis) for cell in cells]
        known = {json.dumps(v) for v in values if v is not None}
        shared = next((v for v in values if v is not None), None) if len(known) == 1 else None
        for cell, value in zip(cells, values, strict=True):
            cell.axes[axis] = shared if value is None else value


def order_values(values: list) -> list:
    """Numbers ascending, LRA tasks in Table 1 order, anything else in order of first appearance."""
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    if all(v in LRA_TASKS for v in unique):
        return [t for t in LRA_TASKS if t in unique]
    return unique


def label(axes: list[str], values: tuple) -> str:
    """A row or column heading: "full", "pairs=16", "listops, window=8"."""
    parts = []
    for axis, value in zip(axes, values, strict=True):
        if value == NOT_APPLICABLE:
            continue
        bare = axis in (VARIANT_AXIS, "config", "config.task") or short_name(axis) in ROW_AXIS_NAMES
        parts.append(str(value) if bare else f"{short_name(axis)}={value}")
    return ", ".join(parts) if parts else "all"


# ----------------------------------------------------------------------------- statistics


@dataclass
class Group:
    """The finished seeds of one (row, column) pair, and what they add up to."""

    row: tuple
    column: tuple
    cells: list[Cell]

    def values(self, key: str) -> list[float]:
        return [c.results[key] for c in self.cells if c.results.get(key) is not None]

    @property
    def n(self) -> int:
        return len(self.cells)

    def test_accuracy(self) -> tuple[float, float | None]:
        """(mean, sample std with ddof=1, None for one seed), in fractions of 1."""
        return mean_std(self.values("test_accuracy"))

    def best_validation(self) -> tuple[float, float | None]:
        """Best validation accuracy per seed (results.json's when the run tracked it, else the
        best logged validation score), then mean and sample std."""
        best = []
        for cell in self.cells:
            value = cell.results.get("best_validation_accuracy")
            if value is None and cell.curve:
                value = max(accuracy for _, accuracy in cell.curve)
            if value is None:
                value = cell.results.get("validation_accuracy")
            if value is not None:
                best.append(value)
        return mean_std(best)

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return float(np.mean(values)) if values else None

    def memory_source(self) -> str:
        sources = {str(c.results.get("peak_memory_source") or "?") for c in self.cells}
        return "+".join(sorted(sources))


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1): the seeds are a sample of possible runs."""
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


@dataclass
class Table:
    """The grid the report is made of: row and column axes, their labels and the groups."""

    row_axes: list[str]
    column_axes: list[str]
    rows: list[tuple]
    columns: list[tuple]
    groups: dict[tuple, Group]  # (row, column) -> finished seeds

    def group(self, row: tuple, column: tuple) -> Group | None:
        return self.groups.get((row, column))

    @property
    def is_lra(self) -> bool:
        """Columns are LRA tasks alone: the table then gets LRA's Avg column and published row."""
        return (
            len(self.column_axes) == 1
            and short_name(self.column_axes[0]) == "task"
            and all(column[0] in LRA_TASKS for column in self.columns)
        )


def build_table(cells: list[Cell], axes: list[str]) -> Table:
    """Groups the finished cells by (row, column); rows and columns include unfinished cells, so a
    column whose runs have not finished yet shows as empty rather than missing."""
    axes = prioritized(list(dict.fromkeys(axes + [VARIANT_AXIS])))
    assign_axes(cells, axes)
    row_axes, column_axes = split_axes(independent_keys(axes, [cell.axes for cell in cells]))
    known = [c for c in cells if all(c.axes[a] is not None for a in row_axes + column_axes)]

    def ordered(axes_: list[str]) -> list[tuple]:
        keys = {tuple(c.axes[a] for a in axes_) for c in known}
        ranks = [order_values([c.axes[a] for c in known]) for a in axes_]
        return sorted(keys, key=lambda key: [r.index(v) for r, v in zip(ranks, key, strict=True)])

    groups: dict[tuple, Group] = {}
    for cell in known:
        if cell.status == FINISHED:
            row = tuple(cell.axes[a] for a in row_axes)
            column = tuple(cell.axes[a] for a in column_axes)
            groups.setdefault((row, column), Group(row, column, [])).cells.append(cell)
    return Table(row_axes, column_axes, ordered(row_axes), ordered(column_axes), groups)


# ----------------------------------------------------------------------------- formatting


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def accuracy_entry(mean: float | None, std: float | None, n: int) -> str:
    """ "57.30 ± 1.20 (3)" in percent; one seed has no spread: "57.30 (1)"."""
    if mean is None:
        return "–"
    spread = "" if std is None else f" ± {100 * std:.2f}"
    return f"{100 * mean:.2f}{spread} ({n})"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def lra_average(means: dict[str, float | None]) -> float | None:
    """LRA's Avg: the mean over the tasks but Path-X (which every model failed), only when the row
    has all of them (a partial average would not compare with the published one)."""
    tasks = [t for t in means if t != "pathx"]
    if not tasks or any(means[t] is None for t in tasks):
        return None
    return float(np.mean([means[t] for t in tasks]))


def main_table(table: Table) -> str:
    """Test accuracy, one row per variant, one column per value of the other non-seed axes."""
    header = [" / ".join(short_name(a) for a in table.row_axes)]
    header += [label(table.column_axes, column) for column in table.columns]
    if table.is_lra:
        header = [header[0]] + [LRA_TITLES[c[0]] for c in table.columns] + ["Avg"]
    body = []
    for row in table.rows:
        entries, means = [label(table.row_axes, row)], {}
        for column in table.columns:
            group = table.group(row, column)
            mean, std = group.test_accuracy() if group else (None, None)
            entries.append(accuracy_entry(mean, std, group.n if group else 0))
            means[column] = mean
        if table.is_lra:
            entries.append(percent(lra_average({c[0]: m for c, m in means.items()})))
        body.append(entries)
    if table.is_lra:
        published = [LRA_TRANSFORMER[c[0]] for c in table.columns]
        average = lra_average({c[0]: LRA_TRANSFORMER[c[0]] for c in table.columns})
        body.append(
            [LRA_CITATION]
            + ["fail" if v is None else f"{v:.2f}" for v in published]
            + [percent(None if average is None else average / 100)]
        )
    return markdown_table(header, body)


def detail_table(table: Table) -> str:
    """Best validation accuracy, speed, memory and size for every group with finished runs."""
    header = [
        " / ".join(short_name(a) for a in table.row_axes),
        ", ".join(short_name(a) for a in table.column_axes) or "column",
        "best validation %",
        "steps/s",
        "peak memory MiB",
        "params",
    ]
    body = []
    for row in table.rows:
        for column in table.columns:
            group = table.group(row, column)
            if group is None:
                continue
            speed, memory = group.mean("steps_per_second"), group.mean("peak_memory_bytes")
            params = group.mean("num_params")
            body.append(
                [
                    label(table.row_axes, row),
                    label(table.column_axes, column),
                    accuracy_entry(*group.best_validation(), group.n),
                    "–" if speed is None else f"{speed:.2f}",
                    "–" if memory is None else f"{memory / 2**20:.1f} ({group.memory_source()})",
                    "–" if params is None else f"{int(round(params)):,}",
                ]
            )
    return markdown_table(header, body)


def status_section(cells: list[Cell]) -> list[str]:
    """The cells whose numbers are not in the tables, and why."""
    lines = ["## Runs not in the tables", ""]
    by_status = {s: [c for c in cells if c.status == s] for s in (RUNNING, NOT_STARTED, FAILED)}
    if not any(by_status.values()):
        return lines + [f"None: all {len(cells)} runs finished.", ""]
    if by_status[RUNNING]:
        names = ", ".join(f"`{c.name}`" for c in by_status[RUNNING])
        lines.append(
            f"- running (config.json but no results.json yet; a killed run looks the same): {names}"
        )
    if by_status[NOT_STARTED]:
        lines.append("- not started: " + ", ".join(f"`{c.name}`" for c in by_status[NOT_STARTED]))
    for cell in by_status[FAILED]:
        lines.append(f"- failed: `{cell.name}` (exit {cell.returncode}): {cell.error}")
    return lines + [""]


def write_csv(table: Table, path: Path) -> None:
    """One row per group with finished runs; accuracies as fractions, as in results.json."""
    names = [short_name(a) for a in table.row_axes + table.column_axes]
    header = names + [
        "test_accuracy_mean",
        "test_accuracy_std",
        "seeds",
        "best_validation_accuracy_mean",
        "steps_per_second",
        "peak_memory_mib",
        "peak_memory_source",
        "num_params",
    ]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in table.rows:
            for column in table.columns:
                group = table.group(row, column)
                if group is None:
                    continue
                mean, std = group.test_accuracy()
                memory, params = group.mean("peak_memory_bytes"), group.mean("num_params")
                writer.writerow(
                    list(row)
                    + list(column)
                    + [
                        blank(mean),
                        blank(std),
                        group.n,
                        blank(group.best_validation()[0]),
                        blank(group.mean("steps_per_second")),
                        blank(None if memory is None else memory / 2**20),
                        group.memory_source(),
                        "" if params is None else int(round(params)),
                    ]
                )


def blank(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# ----------------------------------------------------------------------------- plots


def figure(panels: int):
    """A row of `panels` subplots sharing the y axis, on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels + 1, 4), squeeze=False, sharey=True)
    return plt, fig, list(axes[0])


def save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_speed_accuracy(table: Table, path: Path) -> bool:
    """LRA's Figure 3: test accuracy against steps/s, marker area proportional to peak memory."""
    groups = [g for g in table.groups.values() if g.mean("steps_per_second") is not None]
    if not groups:
        return False
    largest = max(g.mean("peak_memory_bytes") or 0 for g in groups) or 1
    plt, fig, panels = figure(len(table.columns))
    for axis, column in zip(panels, table.columns, strict=True):
        for color, row in enumerate(table.rows):
            group = table.group(row, column)
            if group is None or group.mean("steps_per_second") is None:
                continue
            x, y = group.mean("steps_per_second"), 100 * group.test_accuracy()[0]
            area = 600 * (group.mean("peak_memory_bytes") or 0) / largest + 20
            axis.scatter([x], [y], s=area, alpha=0.6, color=f"C{color % 10}")
            axis.annotate(
                label(table.row_axes, row), (x, y), textcoords="offset points", xytext=(6, 6)
            )
        axis.set_title(label(table.column_axes, column))
        axis.set_xlabel("training steps per second")
    panels[0].set_ylabel("test accuracy (%); marker area: peak memory")
    save(plt, fig, path)
    return True


def mean_curve(cells: list[Cell]) -> tuple[list[int], list[float]]:
    """Validation accuracy per step, the mean over the seeds that logged that step."""
    by_step: dict[int, list[float]] = {}
    for cell in cells:
        for step, accuracy in cell.curve:
            by_step.setdefault(step, []).append(accuracy)
    steps = sorted(by_step)
    return steps, [100 * float(np.mean(by_step[s])) for s in steps]


def plot_validation_curves(table: Table, path: Path) -> bool:
    """Validation accuracy against step, a panel per column, a line per variant (seed mean)."""
    if not any(c.curve for g in table.groups.values() for c in g.cells):
        return False
    plt, fig, panels = figure(len(table.columns))
    for axis, column in zip(panels, table.columns, strict=True):
        for color, row in enumerate(table.rows):
            group = table.group(row, column)
            if group is not None and any(c.curve for c in group.cells):
                steps, accuracy = mean_curve(group.cells)
                name = label(table.row_axes, row)
                axis.plot(steps, accuracy, marker=".", label=name, color=f"C{color % 10}")
        axis.set_title(label(table.column_axes, column))
        axis.set_xlabel("step")
        axis.legend(fontsize="small")
    panels[0].set_ylabel("validation accuracy (%), mean over seeds")
    save(plt, fig, path)
    return True


def numeric_axes(table: Table) -> list[str]:
    """Column axes whose values are all numbers (pairs, distance, window...): worth a line plot."""
    numeric = []
    for index, axis in enumerate(table.column_axes):
        values = [column[index] for column in table.columns]
        if len(values) > 1 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            numeric.append(axis)
    return numeric


def plot_accuracy_against(table: Table, axis_name: str, path: Path) -> bool:
    """Test accuracy against one numeric axis: a line per variant (and per value of the other
    column axes), the seed mean, with a band from the lowest to the highest seed."""
    index = table.column_axes.index(axis_name)
    others = [a for a in table.column_axes if a != axis_name]
    plt, fig, panels = figure(1)
    axis = panels[0]
    for row in table.rows:
        lines: dict[tuple, list[tuple]] = {}
        for column in table.columns:
            group = table.group(row, column)
            if group is None:
                continue
            rest = column[:index] + column[index + 1 :]
            accuracy = [100 * v for v in group.values("test_accuracy")]
            lines.setdefault(rest, []).append(
                (column[index], np.mean(accuracy), min(accuracy), max(accuracy))
            )
        for rest, points in lines.items():
            x, mean, low, high = (list(v) for v in zip(*sorted(points), strict=True))
            name = label(table.row_axes, row) + (f" ({label(others, rest)})" if others else "")
            (line,) = axis.plot(x, mean, marker="o", label=name)
            axis.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    axis.set_xticks(sorted({column[index] for column in table.columns}))
    axis.set_xlabel(short_name(axis_name))
    axis.set_ylabel("test accuracy (%)")
    axis.legend(title="mean over seeds; band: min–max", fontsize="small")
    save(plt, fig, path)
    return True


# ----------------------------------------------------------------------------- attention maps


def attention_map_section(table: Table, sweep_dir: Path) -> list[str]:
    """One attention-map PNG per variant (research.attention_maps), from the first finished cell
    of each row; the report's markdown lines. A map newer than its run's results.json is reused,
    so reporting a finished sweep again takes seconds."""
    from research import attention_maps

    lines = ["## Attention maps", ""]
    for row in table.rows:
        cells = [c for column in table.columns if (g := table.group(row, column)) for c in g.cells]
        if not cells:
            continue
        name = label(table.row_axes, row)
        out = sweep_dir / f"attention_{safe_name(name)}.png"
        results = cells[0].directory / "results.json"
        try:
            if not out.is_file() or out.stat().st_mtime < results.stat().st_mtime:
                attention_maps.save_attention_map(str(cells[0].directory), out)
        except Exception as error:  # a map is an extra: the tables above must still be written
            lines += [f"{name} (`{cells[0].name}`): no map ({type(error).__name__}: {error})", ""]
            continue
        lines += [f"{name} (`{cells[0].name}`):", "", f"![attention map: {name}]({out.name})", ""]
    return lines if len(lines) > 2 else []


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


# ----------------------------------------------------------------------------- the report


def write_report(sweep_dir: str | Path) -> str:
    """Writes report.md, results.csv and the plots into `sweep_dir`; returns the main table
    (markdown), which the sweep runner prints. Raises UserError when the folder holds no runs."""
    sweep_dir = Path(sweep_dir)
    experiment, axes, cells = load_sweep(sweep_dir)
    table = build_table(cells, axes)
    main = main_table(table)
    finished = sum(c.status == FINISHED for c in cells)
    lines = [
        f"# Sweep report: {experiment}",
        "",
        f"{datetime.date.today().isoformat()}; {finished} of {len(cells)} runs finished in "
        f"`{sweep_dir}`; swept: {', '.join(axes) or 'nothing'}.",
        "",
        "## Test accuracy (%)",
        "",
        "Each entry: mean ± sample standard deviation (ddof=1) over seeds, and the number of "
        "finished seeds in brackets; one seed shows no spread. Only finished runs are counted.",
        "",
        main,
        "",
    ]
    if table.is_lra:
        lines += [
            "Avg: the mean over the tasks but Path-X, as in LRA Table 1 (shown only when a row has "
            "every task). The last row is the published Transformer (Tay et al. 2020, "
            "arXiv 2011.04006, Table 1).",
            "",
        ]
    lines += [
        "## Validation, speed, memory, size",
        "",
        "Best validation accuracy: mean ± sample std over seeds; steps/s (training steps only, "
        "compilation and evaluation left out) and peak memory (device, or the host process's "
        "peak RSS on CPU): means over seeds.",
        "",
        detail_table(table),
        "",
    ]
    lines += status_section(cells)
    write_csv(table, sweep_dir / "results.csv")
    lines += plots_section(table, sweep_dir)
    lines += attention_map_section(table, sweep_dir)
    (sweep_dir / "report.md").write_text("\n".join(lines).rstrip() + "\n")
    return main


def plots_section(table: Table, sweep_dir: Path) -> list[str]:
    """Draws the plots that have data and returns their markdown links."""
    if not table.groups:
        return ["## Plots", "", "No finished runs yet.", ""]
    links = []
    if plot_speed_accuracy(table, sweep_dir / "speed_accuracy.png"):
        links.append(("test accuracy against speed; marker area: peak memory", "speed_accuracy"))
    if plot_validation_curves(table, sweep_dir / "validation_curves.png"):
        links.append(("validation accuracy against step, mean over seeds", "validation_curves"))
    for axis in numeric_axes(table):
        name = f"accuracy_vs_{safe_name(short_name(axis))}"
        plot_accuracy_against(table, axis, sweep_dir / f"{name}.png")
        links.append((f"test accuracy against {short_name(axis)}; band: min–max over seeds", name))
    lines = ["## Plots", ""]
    for caption, name in links:
        lines += [f"![{caption}]({name}.png)", "", f"*{caption}*", ""]
    return lines


def main(argv: list[str]) -> int:
    """`python -m research.report runs/X`: writes the report and prints the main table."""
    if len(argv) != 1:
        print("usage: python -m research.report runs/<sweep>", file=sys.stderr)
        return 2
    try:
        print(write_report(argv[0]))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report in {Path(argv[0]) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
