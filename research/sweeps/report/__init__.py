"""The sweep report: what a sweep folder's runs add up to, as tables, a CSV and plots.

`python -m research.sweeps.report runs/X [--best-over AXIS]` (or `write_report("runs/X")`, which
the sweep runner calls) reads every cell folder `runs/X/<cell>/` (config.json, results.json,
metrics.jsonl, failed.json, cell.json, and runs/X/sweep.json when the sweep runner wrote one) and
writes into runs/X:

- report.md: a main table (one row per attention variant, one column per value of the other
  swept axes except the seed; test accuracy in %, mean ± sample std (n)); for LRA tasks the
  published LRA Table 1 row of each of our variants that has one (published.py), Table 1's Avg
  column when every task but Path-X is a column, and the caveats of the comparison; for runs
  trained on MQAR's mix, the test accuracy on each segment's own test split; a table of best
  validation accuracy, speed, memory and size; the cells that are running, not started or
  failed (never averaged in); the plots.
- results.csv: one row per (variant, other axes) group with finished runs.
- speed_accuracy.png, validation_curves.png and accuracy_vs_<axis>.png per numeric axis; for a
  recall sweep over the model width, accuracy_vs_width.png (Zoology's Figure 2).

Best over an axis (`--best-over config.optimizer.learning_rate`, or the experiment file's
`BEST_OVER`, which the runner records in sweep.json): that axis is neither row nor column; each
group reports the test accuracy of the value whose best validation accuracy, averaged over seeds,
is highest, and says which value that was. `--best-over none` switches a recorded BEST_OVER off.

Only finished runs (those with results.json) are averaged; the seed axis is what is averaged over.
The parts: runs.py reads the sweep folder, tables.py groups and formats, csv_export.py and plots.py
write the other files; this module assembles report.md.
"""

import datetime
import sys
from pathlib import Path

from research.errors import EXIT_USAGE, UserError, print_error
from research.sweeps.cells import FINISHED, read_json
from research.sweeps.report import published
from research.sweeps.report.csv_export import write_csv
from research.sweeps.report.plots import attention_map_section, plots_section
from research.sweeps.report.runs import load_sweep
from research.sweeps.report.tables import (
    build_table,
    detail_table,
    main_table,
    published_caveats,
    segment_table,
    status_section,
)

USAGE = "usage: python -m research.sweeps.report runs/<sweep> [--best-over AXIS|none]"
#: `--best-over none`: no best-over axis, even where the experiment file's BEST_OVER named one.
NO_BEST_OVER = "none"


def write_report(sweep_dir: str | Path, best_over: str | None = None) -> str:
    """Writes report.md, results.csv and the plots into `sweep_dir`; returns the main table
    (markdown), which the sweep runner prints. `best_over` (default: sweep.json's) is a swept axis
    to take each group's best-validation value of; "none" shows every value (sweep.json's axis
    included) as columns. Raises UserError when the folder holds no runs
    or `best_over` is not a swept axis."""
    sweep_dir = Path(sweep_dir)
    experiment, axes, runs = load_sweep(sweep_dir)
    if best_over == NO_BEST_OVER:  # every value of every axis shown, sweep.json's choice too
        best_over = None
    else:
        best_over = best_over or (read_json(sweep_dir / "sweep.json") or {}).get("best_over")
    table = build_table(runs, axes, best_over)
    main = main_table(table)
    finished = sum(r.status == FINISHED for r in runs)
    lines = [
        f"# Sweep report: {experiment}",
        "",
        f"{datetime.date.today().isoformat()}; {finished} of {len(runs)} runs finished in "
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
    if table.best_over:
        name = table.heading(table.best_over)
        lines += [
            f"Best over {name}: each entry is the test accuracy of the {name} after the @, the one "
            "whose best validation accuracy, averaged over seeds, is highest in that row and "
            f"column; the other {name} values' runs are left out of the tables, the CSV and the "
            "plots (the details table lists every value's validation accuracy).",
            "",
        ]
    if table.is_lra:
        lines += [
            "LRA Table 1 rows: the published accuracy of the model that corresponds to our "
            f"variants ({published.CITATION}). Avg: the mean over the tasks but Path-X, as in "
            "Table 1, shown only when every one of them is a column, and for our rows only when "
            "the row has all of them.",
            "",
        ]
        caveats = published_caveats(table)
        if caveats:
            lines += ["Where our runs differ from Table 1's:", ""]
            lines += [f"- {caveat}" for caveat in caveats] + [""]
    segments = segment_table(table)
    if segments is not None:
        lines += [
            "## Test accuracy per segment of the training mix (%)",
            "",
            "Runs trained on a mix of (length, pairs) segments are also scored on each segment's "
            "own test split (results.json's test_accuracy_by_split): mean ± sample std (seeds).",
            "",
            segments,
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
    lines += status_section(runs)
    write_csv(table, sweep_dir / "results.csv")
    lines += plots_section(table, sweep_dir)
    lines += attention_map_section(table, sweep_dir)
    (sweep_dir / "report.md").write_text("\n".join(lines).rstrip() + "\n")
    return main


def parse_args(argv: list[str]) -> tuple[str, str | None] | None:
    """(sweep folder, best-over axis or None) from `runs/X [--best-over AXIS]`; None if invalid."""
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--") else [arg])]
    best_over = None
    if "--best-over" in argv:
        at = argv.index("--best-over")
        best_over = argv[at + 1] if at + 1 < len(argv) else ""
        argv = argv[:at] + argv[at + 2 :]
    if len(argv) != 1 or argv[0].startswith("-") or best_over == "":
        return None
    return argv[0], best_over


def main(argv: list[str]) -> int:
    """`python -m research.sweeps.report runs/X [--best-over AXIS]`: writes the report and prints
    the main table."""
    parsed = parse_args(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    folder, best_over = parsed
    try:
        print(write_report(folder, best_over))
    except UserError as error:
        print_error(error)
        return EXIT_USAGE
    print(f"report in {Path(folder) / 'report.md'}")
    return 0
