"""The report's results.csv: one row per (row, column) group with finished runs; with a best-over
axis, a `chosen_<axis>` column says which value's runs the group's numbers are."""

import csv
from pathlib import Path

from research.sweeps.report.tables import Table


def write_csv(table: Table, path: Path) -> None:
    """One row per group with finished runs; accuracies as fractions, as in results.json."""
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
                    ]
                )


def blank(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
