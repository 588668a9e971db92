"""The sweep report: what a sweep folder's runs add up to, as tables, a CSV and plots.

`python -m research.sweeps.report runs/X` (or `write_report("runs/X")`, which the sweep runner
calls) reads every cell folder `runs/X/<cell>/` (config.json, results.json, metrics.jsonl,
failed.json, cell.json, and runs/X/sweep.json when the sweep runner wrote one) and writes into
runs/X:

- report.md: a main table (one row per attention variant, one column per value of the other
  swept axes except the seed; test accuracy in %, mean ± sample std (n)); for LRA tasks an Avg
  column and the published Transformer row; a table of best validation accuracy, speed, memory and
  size; the cells that are running, not started or failed (never averaged in); the plots.
- results.csv: one row per (variant, other axes) group with finished runs.
- speed_accuracy.png, validation_curves.png and accuracy_vs_<axis>.png per numeric axis.

Only finished runs (those with results.json) are averaged; the seed axis is what is averaged over.
The parts: runs.py reads the sweep folder, tables.py groups and formats, csv_export.py and plots.py
write the other files; this module assembles report.md.
"""

import datetime
import sys
from pathlib import Path

from research.errors import EXIT_USAGE, UserError, print_error
from research.sweeps.cells import FINISHED
from research.sweeps.report.csv_export import write_csv
from research.sweeps.report.plots import attention_map_section, plots_section
from research.sweeps.report.runs import load_sweep
from research.sweeps.report.tables import build_table, detail_table, main_table, status_section


def write_report(sweep_dir: str | Path) -> str:
    """Writes report.md, results.csv and the plots into `sweep_dir`; returns the main table
    (markdown), which the sweep runner prints. Raises UserError when the folder holds no runs."""
    sweep_dir = Path(sweep_dir)
    experiment, axes, runs = load_sweep(sweep_dir)
    table = build_table(runs, axes)
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
    lines += status_section(runs)
    write_csv(table, sweep_dir / "results.csv")
    lines += plots_section(table, sweep_dir)
    lines += attention_map_section(table, sweep_dir)
    (sweep_dir / "report.md").write_text("\n".join(lines).rstrip() + "\n")
    return main


def main(argv: list[str]) -> int:
    """`python -m research.sweeps.report runs/X`: writes the report and prints the main table."""
    if len(argv) != 1:
        print("usage: python -m research.sweeps.report runs/<sweep>", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(write_report(argv[0]))
    except UserError as error:
        print_error(error)
        return EXIT_USAGE
    print(f"report in {Path(argv[0]) / 'report.md'}")
    return 0
