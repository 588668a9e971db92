"""The report's tables: runs grouped by (row, column), the seeds of a group averaged, and the
markdown of the main table, the details table and the runs left out.

Rows are the attention variant, its own options, the position scheme and the training protocol
(from scratch or self-pretrained: a difference row follows each variant's protocols); columns the
other swept axes but the seed, which is what a group averages over. A best-over axis (the learning
rate) is neither: each group keeps the runs of the value whose best validation accuracy, averaged
over seeds, is highest. For LRA tasks the main table gets Table 1's rows of our variants
(published.py) and, when every task but Path-X is a column, its Avg column.
"""

from dataclasses import dataclass, field

import numpy as np

from research.errors import UserError
from research.sweeps.axes import independent_keys, short_names
from research.sweeps.cells import FAILED, FINISHED, NOT_STARTED, RUNNING
from research.sweeps.report import published
from research.sweeps.report.runs import (
    NOT_APPLICABLE,
    OPTION_PREFIX,
    PROTOCOL_AXIS_NAMES,
    ROW_AXIS_NAMES,
    TASK_AXES,
    VARIANT_AXIS,
    Run,
    assign_axes,
    field_name,
    is_seed,
    prioritized,
    run_task,
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
# Table 1's Avg: the mean over the tasks but Path-X (which every model failed).
AVERAGED_TASKS = LRA_TASKS[:-1]


def split_axes(axes: list[str]) -> tuple[list[str], list[str]]:
    """(row axes, column axes): the variant, its options, the position scheme and the protocol
    (last) are rows; seeds are averaged."""
    model = [
        a
        for a in axes
        if a != VARIANT_AXIS and (field_name(a) in ROW_AXIS_NAMES or a.startswith(OPTION_PREFIX))
    ]
    rows = [VARIANT_AXIS, *model] + [a for a in axes if field_name(a) in PROTOCOL_AXIS_NAMES]
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
    """The finished seeds of one (row, column) pair, and what they add up to; with a best-over
    axis, those of the `chosen` value, and `candidates` every value's seeds."""

    row: tuple
    column: tuple
    runs: list[Run]
    chosen: object = None
    candidates: dict[object, "Group"] = field(default_factory=dict)

    def values(self, key: str) -> list[float]:
        return [r.results[key] for r in self.runs if r.results.get(key) is not None]

    @property
    def n(self) -> int:
        return len(self.runs)

    def test_accuracy(self) -> tuple[float, float | None]:
        """(mean, sample std with ddof=1, None for one seed), in fractions of 1."""
        return mean_std(self.values("test_accuracy"))

    def segment_accuracy(self, split: str) -> tuple[float | None, float | None, int]:
        """Test accuracy on one segment's own test split (results.json's
        `test_accuracy_by_split`, MQAR's mix): mean, sample std and the number of seeds that
        have it."""
        by_split = [r.results.get("test_accuracy_by_split") or {} for r in self.runs]
        values = [s[split] for s in by_split if s.get(split) is not None]
        return (*mean_std(values), len(values))

    def segments(self) -> list[str]:
        """The segment test splits any of these runs scored, in the order they were written."""
        names = [name for r in self.runs for name in r.results.get("test_accuracy_by_split") or {}]
        return list(dict.fromkeys(names))

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
    best_over: str | None = None  # the axis each group takes its best-validation value of
    task: str | None = None  # the one task of every run, when the task is not an axis

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

    def group_headings(self) -> list[str]:
        """The first two headings of a table with a line per group: its row and column axes."""
        return [
            " / ".join(self.heading(a) for a in self.row_axes),
            ", ".join(self.heading(a) for a in self.column_axes) or "column",
        ]

    def finished_groups(self):
        """(row, column, group) of every group with finished runs, rows first, in table order."""
        for row in self.rows:
            for column in self.columns:
                group = self.group(row, column)
                if group is not None:
                    yield row, column, group

    def group_labels(self, row: tuple, column: tuple) -> list[str]:
        return [self.label(self.row_axes, row), self.label(self.column_axes, column)]

    @property
    def tasks(self) -> list[str]:
        """The task of each column, when the columns are tasks alone (or the one column of a
        one-task sweep); [] otherwise."""
        if not self.column_axes and self.task is not None:
            return [self.task]
        if len(self.column_axes) == 1 and self.column_axes[0] in TASK_AXES:
            return [column[0] for column in self.columns]
        return []

    @property
    def is_lra(self) -> bool:
        """Columns are LRA tasks alone: the table then gets Table 1's published rows."""
        return bool(self.tasks) and all(task in LRA_TASKS for task in self.tasks)

    @property
    def has_average(self) -> bool:
        """Table 1's Avg applies: every task but Path-X is a column (a mean over fewer tasks
        would not compare with the published one)."""
        return self.is_lra and set(AVERAGED_TASKS) <= set(self.tasks)


def check_best_over(best_over: object, axes: list[str], source: str = "--best-over") -> None:
    """A best-over axis must be swept, and neither the seed (the seeds are averaged) nor the
    variant (the rows); `source` names where it was given in the error."""
    allowed = [a for a in axes if not is_seed(a) and a != VARIANT_AXIS]
    if best_over not in allowed:
        swept = ", ".join(allowed) or "none"
        raise UserError(f"{source} {best_over} is not a swept axis; swept: {swept}")


def choose(group: Group, axis: str) -> Group | None:
    """The group's runs of the `axis` value with the best mean (over seeds) best validation
    accuracy; the smallest such value on a tie; None when no value has a validation score."""
    candidates: dict[object, Group] = {}
    for run in group.runs:
        candidates.setdefault(run.axes[axis], Group(group.row, group.column, [])).runs.append(run)
    candidates = {v: candidates[v] for v in order_values(list(candidates))}
    scores = {v: g.best_validation()[0] for v, g in candidates.items()}
    scored = [v for v, score in scores.items() if score is not None]
    if not scored:
        return None
    chosen = max(scored, key=lambda v: scores[v])  # the first of equal maxima
    return Group(group.row, group.column, candidates[chosen].runs, chosen, candidates)


def build_table(runs: list[Run], axes: list[str], best_over: str | None = None) -> Table:
    """Groups the finished runs by (row, column); rows and columns include unfinished runs, so a
    column whose runs have not finished yet shows as empty rather than missing. `best_over`: a
    swept axis that is neither row nor column; each group keeps its best-validation value's runs."""
    if best_over is not None:
        check_best_over(best_over, axes)
    axes = prioritized(list(dict.fromkeys(axes + [VARIANT_AXIS])))
    assign_axes(runs, axes)
    kept = [a for a in axes if a != best_over]
    row_axes, column_axes = split_axes(independent_keys(kept, [run.axes for run in runs]))
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
    if best_over is not None:
        chosen = {key: choose(group, best_over) for key, group in groups.items()}
        groups = {key: group for key, group in chosen.items() if group is not None}
    names = short_names(row_axes + column_axes + ([best_over] if best_over else []))
    names.update({axis: "task" for axis in TASK_AXES if axis in names})
    rows, columns = ordered(row_axes), ordered(column_axes)
    tasks = {run_task(run) for run in known}
    task = tasks.pop() if len(tasks) == 1 else None
    return Table(row_axes, column_axes, rows, columns, groups, names, best_over, task)


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


def value_text(value: object) -> str:
    """A swept value as the tables show it: 0.0021544 -> "2.15e-3", 0.01 -> "1e-2", 0.1 -> "0.1"."""
    if isinstance(value, float) and value != 0 and abs(value) <= 1e-2:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return str(value)


def lra_average(means: dict[str, float | None]) -> float | None:
    """Table 1's Avg: the mean over the tasks but Path-X, only when the row has all of them."""
    if any(means.get(task) is None for task in AVERAGED_TASKS):
        return None
    return float(np.mean([means[task] for task in AVERAGED_TASKS]))


def published_rows(table: Table) -> dict[str, list[str]]:
    """Table 1's rows of the variants in an LRA table, in Table 1's order: {row: our variants}."""
    variants = list(dict.fromkeys(row[0] for row in table.rows))
    rows = {name: [v for v in variants if published.ROW_OF_VARIANT.get(v) == name]
            for name in published.TABLE_1}  # fmt: skip
    return {name: ours for name, ours in rows.items() if ours}


def published_caveats(table: Table) -> list[str]:
    """published.caveats for what an LRA table shows: its tasks, its published rows, and what its
    finished runs say (which tasks' data they generated, the bytes their Text runs keep)."""
    rows = published_rows(table)
    if not table.is_lra or not rows:
        return []
    runs = [run for group in table.groups.values() for run in group.runs]
    generated = {run_task(r) for r in runs if not r.config.get("task_options.release_dir")}
    text = [r.config.get("model.max_len") for r in runs if run_task(r) == "text"]
    lengths = {int(n) for n in text if n is not None}
    return published.caveats(set(table.tasks), rows, generated, lengths)


def main_table(table: Table) -> str:
    """Test accuracy, one row per variant, one column per value of the other non-seed axes; with
    a best-over axis, each entry ends with its chosen value ("@2.15e-3")."""
    header = [" / ".join(table.heading(a) for a in table.row_axes)]
    header += [table.label(table.column_axes, column) for column in table.columns]
    if table.is_lra:
        header = [header[0]] + [LRA_TITLES[task] for task in table.tasks]
        header += ["Avg"] if table.has_average else []
    body = []
    for row in table.rows:
        entries, means = [table.label(table.row_axes, row)], {}
        for column, task in zip(table.columns, table.tasks or table.columns, strict=True):
            group = table.group(row, column)
            mean, std = group.test_accuracy() if group else (None, None)
            entry = accuracy_entry(mean, std, group.n if group else 0)
            if group is not None and table.best_over is not None:
                entry += f" @{value_text(group.chosen)}"
            entries.append(entry)
            means[task] = mean
        if table.has_average:
            entries.append(percent(lra_average(means)))
        body.append(entries)
        body += protocol_differences(table, row)
    if table.is_lra:
        for name, ours in published_rows(table).items():
            numbers = published.TABLE_1[name]
            average = [f"{published.TABLE_1_AVG[name]:.2f}"] if table.has_average else []
            body.append(
                [f"LRA Table 1: {name} (ours: {', '.join(ours)})"]
                + ["fail" if numbers[t] is None else f"{numbers[t]:.2f}" for t in table.tasks]
                + average
            )
    return markdown_table(header, body)


def protocol_axis(table: Table) -> str | None:
    """The row axis of the training protocol (configs' `pretrain` argument; split_axes puts it
    last), if the table has one."""
    last = table.row_axes[-1]
    return last if len(table.row_axes) > 1 and field_name(last) in PROTOCOL_AXIS_NAMES else None


def protocol_differences(table: Table, row: tuple) -> list[list[str]]:
    """After a model's last protocol row: one row per protocol but its first (from scratch,
    "none"), that protocol's mean test accuracy minus the first's per column (and Avg), in
    points."""
    axis = protocol_axis(table)
    same_model = [r for r in table.rows if r[:-1] == row[:-1]] if axis else []
    if len(same_model) < 2 or row != same_model[-1]:
        return []

    def means(r: tuple) -> dict:
        columns = zip(table.columns, table.tasks or table.columns, strict=True)
        groups = {task: table.group(r, column) for column, task in columns}
        return {task: g.test_accuracy()[0] if g else None for task, g in groups.items()}

    def points(ours: float | None, first: float | None) -> str:
        return "–" if ours is None or first is None else f"{100 * (ours - first):+.2f}"

    baseline, *others = same_model
    first = means(baseline)
    lines = []
    for other in others:
        ours = means(other)
        model = table.label(table.row_axes[:-1], row[:-1])
        entries = [f"{model}: {table.label([axis], other[-1:])} − {value_text(baseline[-1])}"]
        entries += [points(ours[task], first[task]) for task in first]
        if table.has_average:
            entries.append(points(lra_average(ours), lra_average(first)))
        lines.append(entries)
    return lines


def candidates_entry(group: Group) -> str:
    """Every best-over value's mean best validation accuracy and seeds: "1e-3: 82.00 (2); ..."."""
    parts = []
    for value, candidate in group.candidates.items():
        mean = candidate.best_validation()[0]
        parts.append(f"{value_text(value)}: {percent(mean)} ({candidate.n})")
    return "; ".join(parts)


def detail_table(table: Table) -> str:
    """Best validation accuracy, speed, memory and size for every group with finished runs; with
    a best-over axis, the chosen value and every value's validation accuracy too."""
    best_over = table.heading(table.best_over) if table.best_over else None
    header = table.group_headings()
    if best_over:
        header += [f"chosen {best_over}", f"best validation % per {best_over} (seeds)"]
    header += ["best validation %", "steps/s", "peak memory MiB", "params"]
    body = []
    for row, column, group in table.finished_groups():
        speed, memory = group.mean("steps_per_second"), group.mean("peak_memory_bytes")
        params = group.mean("num_params")
        entries = table.group_labels(row, column)
        if best_over:
            entries += [value_text(group.chosen), candidates_entry(group)]
        body.append(
            entries
            + [
                accuracy_entry(*group.best_validation(), group.n),
                "–" if speed is None else f"{speed:.2f}",
                "–" if memory is None else f"{memory / 2**20:.1f} ({group.memory_source()})",
                "–" if params is None else f"{int(round(params)):,}",
            ]
        )
    return markdown_table(header, body)


def table_segments(table: Table) -> list[str]:
    """Every segment test split (MQAR's mix: "test_64x4", ...) any group's runs scored."""
    names = [name for group in table.groups.values() for name in group.segments()]
    return list(dict.fromkeys(names))


def segment_table(table: Table) -> str | None:
    """Test accuracy on each segment's own test split (a run trained on a mix of (length, pairs),
    scored on each one apart), one row per group; None when no run has segments."""
    segments = table_segments(table)
    if not segments:
        return None
    header = table.group_headings() + [f"{name} %" for name in segments]
    body = [
        table.group_labels(row, column)
        + [accuracy_entry(*group.segment_accuracy(name)) for name in segments]
        for row, column, group in table.finished_groups()
    ]
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
