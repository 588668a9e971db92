"""The report's tables: runs grouped by (row, column), the seeds of a group averaged, and the
markdown of the main table, the details table and the runs left out.

Rows are the attention variant, its own options and the position scheme; columns the other swept
axes but the seed, which is what a group averages over. For LRA tasks the main table gets LRA's Avg
column and its published Transformer row.
"""

from dataclasses import dataclass, field

import numpy as np

from research.sweeps.axes import independent_keys, short_names
from research.sweeps.cells import FAILED, FINISHED, NOT_STARTED, RUNNING
from research.sweeps.report.runs import (
    NOT_APPLICABLE,
    OPTION_PREFIX,
    ROW_AXIS_NAMES,
    TASK_AXES,
    VARIANT_AXIS,
    Run,
    assign_axes,
    field_name,
    is_seed,
    prioritized,
)

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


def split_axes(axes: list[str]) -> tuple[list[str], list[str]]:
    """(row axes, column axes): the variant, its options and the position scheme are rows;
    seeds are averaged."""
    rows = [VARIANT_AXIS] + [
        a
        for a in axes
        if a != VARIANT_AXIS and (field_name(a) in ROW_AXIS_NAMES or a.startswith(OPTION_PREFIX))
    ]
    columns = [a for a in axes if a not in rows and not is_seed(a)]
    return rows, columns


def order_values(values: list) -> list:
    """Numbers ascending, LRA tasks in Table 1 order, anything else in order of first appearance."""
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    if all(v in LRA_TASKS for v in unique):
        return [t for t in LRA_TASKS if t in unique]
    return unique


# ----------------------------------------------------------------------------- statistics


@dataclass
class Group:
    """The finished seeds of one (row, column) pair, and what they add up to."""

    row: tuple
    column: tuple
    runs: list[Run]

    def values(self, key: str) -> list[float]:
        return [r.results[key] for r in self.runs if r.results.get(key) is not None]

    @property
    def n(self) -> int:
        return len(self.runs)

    def test_accuracy(self) -> tuple[float, float | None]:
        """(mean, sample std with ddof=1, None for one seed), in fractions of 1."""
        return mean_std(self.values("test_accuracy"))

    def best_validation(self) -> tuple[float, float | None]:
        """Best validation accuracy per seed (results.json's when the run tracked it, else the
        best logged validation score), then mean and sample std."""
        best = []
        for run in self.runs:
            value = run.results.get("best_validation_accuracy")
            if value is None and run.curve:
                value = max(accuracy for _, accuracy in run.curve)
            if value is None:
                value = run.results.get("validation_accuracy")
            if value is not None:
                best.append(value)
        return mean_std(best)

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return float(np.mean(values)) if values else None

    def memory_source(self) -> str:
        sources = {str(r.results.get("peak_memory_source") or "?") for r in self.runs}
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
    names: dict[str, str] = field(default_factory=dict)  # axis -> its heading

    def group(self, row: tuple, column: tuple) -> Group | None:
        return self.groups.get((row, column))

    def heading(self, axis: str) -> str:
        """An axis as headings show it: its short name (research.sweeps.axes), "task" for the
        config file or task."""
        return self.names.get(axis, axis)

    def label(self, axes: list[str], values: tuple) -> str:
        """A row or column heading: "full", "pairs=16", "listops, window=8"."""
        parts = []
        for axis, value in zip(axes, values, strict=True):
            if value == NOT_APPLICABLE:
                continue
            bare = axis in (VARIANT_AXIS, *TASK_AXES) or field_name(axis) in ROW_AXIS_NAMES
            parts.append(str(value) if bare else f"{self.heading(axis)}={value}")
        return ", ".join(parts) if parts else "all"

    @property
    def is_lra(self) -> bool:
        """Columns are LRA tasks alone: the table then gets LRA's Avg column and published row."""
        return (
            len(self.column_axes) == 1
            and self.column_axes[0] in TASK_AXES
            and all(column[0] in LRA_TASKS for column in self.columns)
        )


def build_table(runs: list[Run], axes: list[str]) -> Table:
    """Groups the finished runs by (row, column); rows and columns include unfinished runs, so a
    column whose runs have not finished yet shows as empty rather than missing."""
    axes = prioritized(list(dict.fromkeys(axes + [VARIANT_AXIS])))
    assign_axes(runs, axes)
    row_axes, column_axes = split_axes(independent_keys(axes, [run.axes for run in runs]))
    known = [r for r in runs if all(r.axes[a] is not None for a in row_axes + column_axes)]

    def ordered(axes_: list[str]) -> list[tuple]:
        keys = {tuple(c.axes[a] for a in axes_) for c in known}
        ranks = [order_values([c.axes[a] for c in known]) for a in axes_]
        return sorted(keys, key=lambda key: [r.index(v) for r, v in zip(ranks, key, strict=True)])

    groups: dict[tuple, Group] = {}
    for run in known:
        if run.status == FINISHED:
            row = tuple(run.axes[a] for a in row_axes)
            column = tuple(run.axes[a] for a in column_axes)
            groups.setdefault((row, column), Group(row, column, [])).runs.append(run)
    names = short_names(row_axes + column_axes)
    names.update({axis: "task" for axis in TASK_AXES if axis in names})
    return Table(row_axes, column_axes, ordered(row_axes), ordered(column_axes), groups, names)


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
    header = [" / ".join(table.heading(a) for a in table.row_axes)]
    header += [table.label(table.column_axes, column) for column in table.columns]
    if table.is_lra:
        header = [header[0]] + [LRA_TITLES[c[0]] for c in table.columns] + ["Avg"]
    body = []
    for row in table.rows:
        entries, means = [table.label(table.row_axes, row)], {}
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
        " / ".join(table.heading(a) for a in table.row_axes),
        ", ".join(table.heading(a) for a in table.column_axes) or "column",
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
                    table.label(table.row_axes, row),
                    table.label(table.column_axes, column),
                    accuracy_entry(*group.best_validation(), group.n),
                    "–" if speed is None else f"{speed:.2f}",
                    "–" if memory is None else f"{memory / 2**20:.1f} ({group.memory_source()})",
                    "–" if params is None else f"{int(round(params)):,}",
                ]
            )
    return markdown_table(header, body)


def status_section(runs: list[Run]) -> list[str]:
    """The runs whose numbers are not in the tables, and why."""
    lines = ["## Runs not in the tables", ""]
    by_status = {s: [r for r in runs if r.status == s] for s in (RUNNING, NOT_STARTED, FAILED)}
    if not any(by_status.values()):
        return lines + [f"None: all {len(runs)} runs finished.", ""]
    if by_status[RUNNING]:
        names = ", ".join(f"`{c.name}`" for c in by_status[RUNNING])
        lines.append(
            f"- running (config.json but no results.json yet; a killed run looks the same): {names}"
        )
    if by_status[NOT_STARTED]:
        lines.append("- not started: " + ", ".join(f"`{c.name}`" for c in by_status[NOT_STARTED]))
    for run in by_status[FAILED]:
        lines.append(f"- failed: `{run.name}` (exit {run.returncode}): {run.error}")
    return lines + [""]
