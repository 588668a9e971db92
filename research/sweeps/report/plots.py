"""The report's figures: accuracy against speed (LRA's Figure 3), validation curves, accuracy
against each numeric axis (for a recall sweep over model width, Zoology's Figure 2: accuracy against
width, a panel per (length, pairs)), and one attention map per variant; each section returns its
markdown. With a best-over axis every figure uses each group's chosen runs."""

from pathlib import Path

import numpy as np

from research.sweeps.report.runs import Run, axis_value, run_task
from research.sweeps.report.tables import Table


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
                table.label(table.row_axes, row), (x, y), textcoords="offset points", xytext=(6, 6)
            )
        axis.set_title(table.label(table.column_axes, column))
        axis.set_xlabel("training steps per second")
    panels[0].set_ylabel("test accuracy (%); marker area: peak memory")
    save(plt, fig, path)
    return True


def mean_curve(runs: list[Run]) -> tuple[list[int], list[float]]:
    """Validation accuracy per step, the mean over the seeds that logged that step."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, accuracy in run.curve:
            by_step.setdefault(step, []).append(accuracy)
    steps = sorted(by_step)
    return steps, [100 * float(np.mean(by_step[s])) for s in steps]


def plot_validation_curves(table: Table, path: Path) -> bool:
    """Validation accuracy against step, a panel per column, a line per variant (seed mean)."""
    if not any(r.curve for g in table.groups.values() for r in g.runs):
        return False
    plt, fig, panels = figure(len(table.columns))
    for axis, column in zip(panels, table.columns, strict=True):
        for color, row in enumerate(table.rows):
            group = table.group(row, column)
            if group is not None and any(r.curve for r in group.runs):
                steps, accuracy = mean_curve(group.runs)
                name = table.label(table.row_axes, row)
                axis.plot(steps, accuracy, marker=".", label=name, color=f"C{color % 10}")
        axis.set_title(table.label(table.column_axes, column))
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
            name = table.label(table.row_axes, row) + (
                f" ({table.label(others, rest)})" if others else ""
            )
            (line,) = axis.plot(x, mean, marker="o", label=name)
            axis.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    axis.set_xticks(sorted({column[index] for column in table.columns}))
    axis.set_xlabel(table.heading(axis_name))
    axis.set_ylabel("test accuracy (%)")
    axis.legend(title="mean over seeds; band: min–max", fontsize="small")
    save(plt, fig, path)
    return True


# ----------------------------------------------------------------------------- Zoology's Figure 2

# The axes that may set a recall run's model width, sequence length and pairs (config fields or
# configs/recall.py's arguments); the first that a run knows is its value.
WIDTH_AXES = ("config.model.emb_dim", "arg.width")
LENGTH_AXES = ("config.task_options.length", "arg.length")
PAIRS_AXES = ("config.task_options.num_pairs", "arg.pairs")


def width_axis(table: Table) -> str | None:
    """The column axis that sweeps the model width of a recall sweep, or None."""
    runs = [run for group in table.groups.values() for run in group.runs]
    if not runs or any(run_task(run) != "recall" for run in runs):
        return None
    return next((axis for axis in table.column_axes if axis in WIDTH_AXES), None)


def known_value(run: Run, axes: tuple[str, ...]) -> object:
    return next((v for a in axes if (v := axis_value(run, a)) is not None), None)


def width_panels(table: Table, axis: str) -> dict[tuple, dict[str, list[tuple]]]:
    """{(length, pairs): {line: [(width, test accuracy %), ...]}}: a line per variant (and per
    value of any other column axis), each group's seed mean, widths ascending."""
    index = table.column_axes.index(axis)
    others = [a for a in table.column_axes if a not in WIDTH_AXES + LENGTH_AXES + PAIRS_AXES]
    panels: dict[tuple, dict[str, list[tuple]]] = {}
    for row in table.rows:
        for column in table.columns:
            group = table.group(row, column)
            if group is None or group.test_accuracy()[0] is None:
                continue
            first = group.runs[0]
            panel = (known_value(first, LENGTH_AXES), known_value(first, PAIRS_AXES))
            rest = tuple(column[table.column_axes.index(a)] for a in others)
            name = table.label(table.row_axes, row)
            name += f" ({table.label(others, rest)})" if others else ""
            points = panels.setdefault(panel, {}).setdefault(name, [])
            points.append((column[index], 100 * group.test_accuracy()[0]))
    order = sorted(panels, key=lambda key: [(v is None, v if v is not None else 0) for v in key])
    return {key: {name: sorted(p) for name, p in panels[key].items()} for key in order}


def plot_accuracy_against_width(table: Table, axis: str, path: Path) -> bool:
    """Zoology's Figure 2: test accuracy against model width (log2 axis), a panel per (length,
    pairs), a line per variant."""
    panels = width_panels(table, axis)
    if not panels:
        return False
    plt, fig, subplots = figure(len(panels))
    names = list(dict.fromkeys(name for lines in panels.values() for name in lines))
    for subplot, ((length, pairs), lines) in zip(subplots, panels.items(), strict=True):
        widths = sorted({width for points in lines.values() for width, _ in points})
        for name, points in lines.items():
            x, y = zip(*points, strict=True)
            color = f"C{names.index(name) % 10}"  # a variant's colour in every panel
            subplot.plot(x, y, marker="o", label=name, color=color)
        subplot.set_xscale("log", base=2)
        subplot.set_xticks(widths, [str(w) for w in widths])
        subplot.minorticks_off()
        subplot.set_title(f"length {length}, pairs {pairs}")
        subplot.set_xlabel("model width")
        subplot.legend(fontsize="small")
    subplots[0].set_ylabel("test accuracy (%), mean over seeds")
    save(plt, fig, path)
    return True


# ----------------------------------------------------------------------------- attention maps


def attention_map_section(table: Table, sweep_dir: Path) -> list[str]:
    """One attention-map PNG per variant (research.sweeps.attention_maps), from the first finished
    run of each row; the report's markdown lines. A map newer than its run's results.json is
    reused, so reporting a finished sweep again takes seconds."""
    from research.sweeps import attention_maps

    lines = ["## Attention maps", ""]
    for row in table.rows:
        runs = [r for column in table.columns if (g := table.group(row, column)) for r in g.runs]
        if not runs:
            continue
        name, first = table.label(table.row_axes, row), runs[0]
        out = sweep_dir / f"attention_{safe_name(name)}.png"
        results = first.directory / "results.json"
        try:
            if not out.is_file() or out.stat().st_mtime < results.stat().st_mtime:
                attention_maps.save_attention_map(str(first.directory), out)
        except Exception as error:  # a map is an extra: the tables above must still be written
            lines += [f"{name} (`{first.name}`): no map ({type(error).__name__}: {error})", ""]
            continue
        lines += [f"{name} (`{first.name}`):", "", f"![attention map: {name}]({out.name})", ""]
    return lines if len(lines) > 2 else []


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def plots_section(table: Table, sweep_dir: Path) -> list[str]:
    """Draws the plots that have data and returns their markdown links."""
    if not table.groups:
        return ["## Plots", "", "No finished runs yet.", ""]
    links = []
    if plot_speed_accuracy(table, sweep_dir / "speed_accuracy.png"):
        links.append(("test accuracy against speed; marker area: peak memory", "speed_accuracy"))
    if plot_validation_curves(table, sweep_dir / "validation_curves.png"):
        links.append(("validation accuracy against step, mean over seeds", "validation_curves"))
    width = width_axis(table)
    best = f"; each point the best {table.heading(table.best_over)}" if table.best_over else ""
    if width and plot_accuracy_against_width(table, width, sweep_dir / "accuracy_vs_width.png"):
        caption = f"test accuracy against model width, a panel per (length, pairs){best}"
        links.append((caption, "accuracy_vs_width"))
    else:
        width = None
    for axis in numeric_axes(table):
        if axis == width:
            continue  # drawn as Zoology's figure above
        name = f"accuracy_vs_{safe_name(table.heading(axis))}"
        plot_accuracy_against(table, axis, sweep_dir / f"{name}.png")
        links.append(
            (f"test accuracy against {table.heading(axis)}; band: min–max over seeds", name)
        )
    lines = ["## Plots", ""]
    for caption, name in links:
        lines += [f"![{caption}]({name}.png)", "", f"*{caption}*", ""]
    return lines
