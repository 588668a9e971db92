"""The report's results.csv: one row per (row, column) group with finished runs; with a best-over
axis, a `chosen_<axis>` column says which value's runs the group's numbers are."""

import csv
from pathlib import Path

from research.sweeps.report.tables import Table, table_segments


def write_csv(table: Table, path: Path) -> None:
    """One row per group with finished runs; accuracies as fractions, as in results.json (and
    a `<segment>_accuracy_mean` column per segment test split of a mix)."""
    segments = table_segments(table)
    names = [table.heading(a) for a in table.row_axes + table.column_axes]
    if table.best_over:
        names.append(f"chosen_{table.heading(table.best_over)}")
    header = names + [
        "test_accuracy_mean",
        "test_accuracy_std",
        "seeds",
        "best_validation_accuracy_mean",
        "steps_per_second",
        "peak_memory_mib",
        "peak_memory_source",
        "num_params",
        *[f"{name}_accuracy_mean" for name in segments],
    ]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row, column, group in table.finished_groups():
            mean, std = group.test_accuracy()
            memory, params = group.mean("peak_memory_bytes"), group.mean("num_params")
            chosen = [group.chosen] if table.best_over else []
            writer.writerow(
                list(row)
                + list(column)
                + chosen
                + [
                    blank(mean),
                    blank(std),
                    group.n,
                    blank(group.best_validation()[0]),
                    blank(group.mean("steps_per_second")),
                    blank(None if memory is None else memory / 2**20),
                    group.memory_source(),
                    "" if params is None else int(round(params)),
                    *[blank(group.segment_accuracy(name)[0]) for name in segments],
                ]
            )


def blank(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
