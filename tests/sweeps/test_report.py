"""The sweep report on hand-written sweep folders: its numbers exactly (means, sample std, counts,
LRA's Avg, published rows and caveats, the best learning rate by validation), the runs it must not
average, the CSV, the plots, and the one-line errors. No training: every file a run would write is
written here."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from research.sweeps import report
from research.sweeps.cells import Cell
from research.sweeps.report import published
from research.sweeps.report.plots import width_axis, width_panels
from research.sweeps.report.runs import (
    Run,
    axis_value,
    load_sweep,
    read_validation_curve,
    run_task,
    task_label,
)
from research.sweeps.report.tables import build_table

MIB = 2**20

# (attention, pairs, seed) -> test accuracy, for the MQAR-like sweep below.
RECALL = {
    ("full", 4, 0): 0.90,
    ("full", 4, 1): 0.94,
    ("full", 8, 0): 0.80,
    ("full", 8, 1): 0.70,
    ("local", 4, 0): 0.50,
    ("local", 4, 1): 0.60,
    ("local", 8, 0): 0.30,
    ("local", 8, 1): 0.35,
}


@pytest.fixture(autouse=True)
def attention_maps(monkeypatch) -> list[tuple[str, Path]]:
    """Stands in for research.sweeps.attention_maps, which needs trained checkpoints: records each
    call and writes a placeholder PNG."""
    from research.sweeps import attention_maps as maps

    calls = []

    def save_attention_map(cell_dir: str, out_path: Path) -> Path:
        calls.append((cell_dir, out_path))
        Path(out_path).write_bytes(b"png")
        return Path(out_path)

    monkeypatch.setattr(maps, "save_attention_map", save_attention_map)
    return calls


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def results(
    accuracy: float, *, memory: int, speed: float = 10.0, validation: float | None = None
) -> dict:
    """A results.json as train.py writes it; best validation accuracy `validation`, by default
    the test accuracy + 0.01."""
    return {
        "test_accuracy": accuracy,
        "validation_accuracy": accuracy - 0.01,
        "best_validation_accuracy": accuracy + 0.01 if validation is None else validation,
        "steps_per_second": speed,
        "peak_memory_bytes": memory,
        "peak_memory_source": "host_rss",
        "num_params": 1234,
    }


def metrics_lines(accuracy: float, *, truncated: bool = False) -> str:
    """A metrics.jsonl with startup, train and validation records; `truncated` cuts the last line
    short, as a run killed mid-write leaves it."""
    records = [
        {"step": 1, "split": "startup", "time_to_first_step": 3.0},
        {"step": 10, "split": "train", "loss": 1.0, "accuracy": 0.2},
        {"step": 10, "split": "validation", "loss": 1.0, "accuracy": accuracy / 2},
        {"step": 20, "split": "validation", "loss": 0.5, "accuracy": accuracy},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    return text + ('{"step": 30, "split": "valid' if truncated else "")


def recall_config(attention: str, pairs: int, seed: int) -> dict:
    return {
        "task": "recall",
        "seed": seed,
        "task_options": {"num_pairs": pairs},
        "model": {"attention": attention, "max_len": 4 * pairs},
    }


@pytest.fixture
def recall_sweep(tmp_path) -> Path:
    """2 variants x 2 pairs x 2 seeds finished; a failed full run, a running local run (killed
    mid-line in metrics.jsonl) and a linear run not started, all listed in sweep.json."""
    sweep = tmp_path / "mqar"
    cells = []

    def cell(attention: str, pairs: int, seed: int) -> Path:
        name = f"attention={attention},pairs={pairs},seed={seed}"
        spec = f"configs/recall.py:pairs={pairs},size=tiny"
        overrides = {"config.model.attention": attention, "config.seed": seed}
        cells.append({"name": name, "config": spec, "overrides": overrides})
        return sweep / name

    for (attention, pairs, seed), accuracy in RECALL.items():
        directory = cell(attention, pairs, seed)
        write_json(directory / "config.json", recall_config(attention, pairs, seed))
        memory = (100 if seed == 0 else 200) * MIB
        write_json(directory / "results.json", results(accuracy, memory=memory, speed=pairs))
        (directory / "metrics.jsonl").write_text(metrics_lines(accuracy))
    failed = cell("full", 4, 2)
    write_json(failed / "config.json", recall_config("full", 4, 2))
    write_json(failed / "failed.json", {"returncode": 1, "error": "Traceback\nerror: boom"})
    running = cell("local", 8, 2)
    write_json(running / "config.json", recall_config("local", 8, 2))
    (running / "metrics.jsonl").write_text(metrics_lines(0.99, truncated=True))
    cell("linear", 4, 0)  # in sweep.json only
    axes = ["config.model.attention", "arg.pairs", "config.seed"]
    write_json(sweep / "sweep.json", {"experiment": "mqar", "axes": axes, "cells": cells})
    return sweep


def test_main_table_has_means_sample_std_and_counts(recall_sweep):
    table = report.write_report(recall_sweep)
    assert table.splitlines() == [
        "| attention | pairs=4 | pairs=8 |",
        "|---|---|---|",
        "| full | 92.00 ± 2.83 (2) | 75.00 ± 7.07 (2) |",
        "| local | 55.00 ± 7.07 (2) | 32.50 ± 3.54 (2) |",
        "| linear | – | – |",
    ]
    # The sample standard deviation (ddof=1), as the report says.
    assert f"{100 * np.std([0.90, 0.94], ddof=1):.2f}" == "2.83"
    text = (recall_sweep / "report.md").read_text()
    assert text.startswith("# Sweep report: mqar\n") and table in text
    assert "sample standard deviation (ddof=1)" in text


def test_failed_running_and_unstarted_runs_are_listed_not_averaged(recall_sweep):
    report.write_report(recall_sweep)
    text = (recall_sweep / "report.md").read_text()
    assert "- failed: `attention=full,pairs=4,seed=2` (exit 1): error: boom" in text
    assert "running (config.json but no results.json yet" in text
    assert "`attention=local,pairs=8,seed=2`" in text
    assert "- not started: `attention=linear,pairs=4,seed=0`" in text
    assert "8 of 11 runs finished" in text


def test_detail_table_has_validation_speed_memory_and_size(recall_sweep):
    report.write_report(recall_sweep)
    text = (recall_sweep / "report.md").read_text()
    # best validation = test + 0.01; speed = pairs; memory the mean of 100 and 200 MiB
    assert "| full | pairs=4 | 93.00 ± 2.83 (2) | 4.00 | 150.0 (host_rss) | 1,234 |" in text
    assert "| local | pairs=8 | 33.50 ± 3.54 (2) | 8.00 | 150.0 (host_rss) | 1,234 |" in text


def test_csv_has_one_row_per_group_with_finished_runs(recall_sweep):
    report.write_report(recall_sweep)
    with (recall_sweep / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["attention"], r["pairs"], r["seeds"]) for r in rows] == [
        ("full", "4", "2"),
        ("full", "8", "2"),
        ("local", "4", "2"),
        ("local", "8", "2"),
    ]
    first = rows[0]
    assert float(first["test_accuracy_mean"]) == pytest.approx(0.92)
    assert float(first["test_accuracy_std"]) == pytest.approx(
        np.std([0.90, 0.94], ddof=1), rel=1e-5
    )
    assert float(first["best_validation_accuracy_mean"]) == pytest.approx(0.93)
    assert float(first["steps_per_second"]) == 4.0
    assert float(first["peak_memory_mib"]) == 150.0
    assert (first["peak_memory_source"], first["num_params"]) == ("host_rss", "1234")


def test_plots_are_written_and_linked(recall_sweep):
    report.write_report(recall_sweep)
    text = (recall_sweep / "report.md").read_text()
    for name in ("speed_accuracy", "validation_curves", "accuracy_vs_pairs"):
        assert (recall_sweep / f"{name}.png").stat().st_size > 1000
        assert f"]({name}.png)" in text
    assert "band: min–max over seeds" in text


def test_validation_curve_skips_a_half_written_line(recall_sweep):
    running = recall_sweep / "attention=local,pairs=8,seed=2" / "metrics.jsonl"
    assert read_validation_curve(running) == [(10, 0.495), (20, 0.99)]


def test_validation_curve_keeps_the_last_record_of_a_step_written_twice(tmp_path):
    # Resumed from the step-10 checkpoint after evaluating at 20: step 20 is written again.
    lines = [(10, 0.5), (20, 0.7), (20, 0.8), (30, 0.9)]
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "".join(
            json.dumps({"step": step, "split": "validation", "accuracy": accuracy}) + "\n"
            for step, accuracy in lines
        )
    )
    assert read_validation_curve(path) == [(10, 0.5), (20, 0.8), (30, 0.9)]


LRA = {"listops": 0.37, "text": 0.64, "retrieval": 0.58, "image": 0.42, "pathfinder": 0.70}


@pytest.fixture
def lra_sweep(tmp_path) -> Path:
    """No sweep.json: full on five LRA tasks (two ListOps seeds), local on ListOps only; the data
    paths differ between tasks and must not become axes."""
    sweep = tmp_path / "lra"
    runs = [("full", task, 0, accuracy) for task, accuracy in LRA.items()]
    runs += [("full", "listops", 1, 0.39), ("local", "listops", 0, 0.20)]
    for attention, task, seed, accuracy in runs:
        directory = sweep / f"{task}_{attention}_{seed}"
        config = {
            "task": task,
            "seed": seed,
            "data_dir": f"/data/{task}",
            "task_options": {"resolution": 32} if task == "pathfinder" else {},
            "model": {"attention": attention, "max_len": len(task) * 100},
        }
        write_json(directory / "config.json", config)
        write_json(directory / "results.json", results(accuracy, memory=MIB))
    return sweep


def test_lra_table_has_avg_and_the_published_row_of_each_variant(lra_sweep):
    lines = report.write_report(lra_sweep).splitlines()
    assert lines[0] == "| attention | ListOps | Text | Retrieval | Image | Pathfinder | Avg |"
    average = 100 * np.mean([0.38, 0.64, 0.58, 0.42, 0.70])
    assert lines[2] == (
        "| full | 38.00 ± 1.41 (2) | 64.00 (1) | 58.00 (1) | 42.00 (1) | 70.00 (1) "
        f"| {average:.2f} |"
    )
    assert lines[3] == "| local | 20.00 (1) | – | – | – | – | – |"  # no Avg over one task
    assert lines[4:] == [
        "| LRA Table 1: Transformer (ours: full) | 36.37 | 64.27 | 57.46 | 42.44 | 71.40 | 54.39 |",
        "| LRA Table 1: Local Attention (ours: local) | 15.82 | 52.98 | 53.39 | 41.46 | 66.63 "
        "| 46.06 |",
    ]
    assert not list(lra_sweep.glob("accuracy_vs_*.png"))
    # Generated ListOps and Pathfinder, Text at max_len 400 bytes, the local row's caveat.
    assert caveat_lines(lra_sweep) == [
        "- ListOps: our expressions are generated here with LRA's procedure "
        "(research/tasks/listops.py), not read from LRA's released files.",
        "- Pathfinder/Path-X: our images are drawn here by Linsley et al.'s procedure at LRA's "
        "settings (research/tasks/pathfinder/), not read from LRA's released images.",
        "- Text: ours keeps the first 400 bytes of each review (configs/text.py follows LRA's "
        "released config, 1,000); Table 1 used 4,000.",
        "- Local Attention: LRA's groups are strided (position mod the number of groups); ours "
        "are contiguous (local: a sliding window).",
    ]


def caveat_lines(sweep: Path) -> list[str]:
    """The caveat list under the main table of report.md ([] when there is none)."""
    text = (sweep / "report.md").read_text()
    if "Where our runs differ from Table 1's:" not in text:
        return []
    block = text.split("Where our runs differ from Table 1's:\n\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def test_published_averages_are_the_means_of_the_tasks_but_path_x():
    for name, numbers in published.TABLE_1.items():
        tasks = [numbers[t] for t in ("listops", "text", "retrieval", "image", "pathfinder")]
        assert round(float(np.mean(tasks)), 2) == published.TABLE_1_AVG[name]
        assert numbers["pathx"] is None


def listops_sweep(folder: Path, variants: list[str], options: dict | None = None) -> Path:
    """ListOps only (a partial LRA sweep), one seed per variant, without sweep.json."""
    for index, attention in enumerate(variants):
        config = {"task": "listops", "seed": 0, "task_options": options or {},
                  "model": {"attention": attention}}  # fmt: skip
        directory = folder / f"{index}_{attention}"  # folders are read in name order
        write_json(directory / "config.json", config)
        write_json(directory / "results.json", results(0.1 + index / 100, memory=MIB))
    return folder


def test_each_variant_gets_its_published_row_and_a_partial_sweep_no_avg(tmp_path):
    variants = ["full", "local", "block_local", "linear", "performer", "t5"]
    sweep = listops_sweep(tmp_path / "lra", variants)
    assert report.write_report(sweep).splitlines() == [
        "| attention | ListOps |",
        "|---|---|",
        "| full | 10.00 (1) |",
        "| local | 11.00 (1) |",
        "| block_local | 12.00 (1) |",
        "| linear | 13.00 (1) |",
        "| performer | 14.00 (1) |",
        "| t5 | 15.00 (1) |",
        "| LRA Table 1: Transformer (ours: full) | 36.37 |",
        "| LRA Table 1: Local Attention (ours: local, block_local) | 15.82 |",
        "| LRA Table 1: Linear Trans. (ours: linear) | 16.13 |",
        "| LRA Table 1: Performer (ours: performer) | 18.01 |",
    ]
    assert caveat_lines(sweep) == [
        "- ListOps: our expressions are generated here with LRA's procedure "
        "(research/tasks/listops.py), not read from LRA's released files.",
        "- Local Attention: LRA's groups are strided (position mod the number of groups); ours "
        "are contiguous (local: a sliding window, block_local: blocks on the diagonal).",
        "- Performer: LRA's default kernel is ReLU (deterministic features); ours is FAVOR+ "
        "(positive random features for the softmax kernel).",
        "- Performer on ListOps: LRA's used 2 features.",
        "- Linear Trans. and Performer: LRA's implementation ignores the padding mask (padded "
        "positions enter its sums); ours leaves padded keys out.",
    ]


def test_caveats_only_for_the_rows_and_data_shown(tmp_path):
    released = listops_sweep(tmp_path / "released", ["linear"], {"release_dir": "/data/listops"})
    report.write_report(released)
    assert caveat_lines(released) == [
        "- Linear Trans.: LRA's implementation ignores the padding mask (padded positions enter "
        "its sums); ours leaves padded keys out."
    ]
    unpublished = listops_sweep(tmp_path / "t5", ["t5"])
    assert report.write_report(unpublished).splitlines()[2:] == ["| t5 | 10.00 (1) |"]
    assert caveat_lines(unpublished) == []


def test_axes_are_inferred_from_configs_without_the_fields_that_follow_from_the_task(lra_sweep):
    _, axes, _ = load_sweep(lra_sweep)
    assert axes == ["config.task", "config.model.attention", "config.seed"]


def test_pathfinder_128_is_labelled_path_x():
    assert task_label("pathfinder", 128) == "pathx"
    assert task_label("pathfinder", 32) == "pathfinder"
    run = Run(Cell("c", ".", spec="configs/pathfinder.py:resolution=128"))
    assert run_task(run) == "pathx"


@pytest.mark.parametrize(
    "make", [lambda p: None, lambda p: p.mkdir(), lambda p: (p / "x").mkdir(parents=True)]
)
def test_a_folder_without_runs_is_a_one_line_error(tmp_path, capsys, make):
    folder = tmp_path / "empty"
    make(folder)
    assert report.main([str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"error: {folder} holds no runs (no <cell>/config.json); run ./launch.sh sweep ... first\n"
    )


def test_axis_values_come_from_config_json_overrides_or_config_arguments():
    started = Run(
        Cell(
            "c",
            ".",
            spec="configs/distance.py:distance=64",
            overrides={"config.model.attention_options.local.window": 16},
        ),
        config={"task": "listops", "seed": 3},
    )
    assert axis_value(started, "config") == "listops"
    assert axis_value(started, "config.seed") == 3
    assert axis_value(started, "arg.distance") == 64
    assert axis_value(started, "config.model.attention_options.local.window") == 16
    waiting = Run(Cell("d", ".", spec="configs/text.py:size=tiny"))
    assert axis_value(waiting, "config") == "text"
    assert axis_value(waiting, "config.seed") is None


def test_a_sweep_over_variants_and_seeds_only_has_one_column(tmp_path):
    sweep = tmp_path / "variants"
    for attention, seed, accuracy in [("full", 0, 0.5), ("full", 1, 0.7), ("linear", 0, 0.4)]:
        directory = sweep / f"{attention}_{seed}"
        config = {"task": "listops", "seed": seed, "model": {"attention": attention}}
        write_json(directory / "config.json", config)
        write_json(directory / "results.json", results(accuracy, memory=MIB))
    # One task, not an axis: its column is still ListOps, beside Table 1's rows.
    assert report.write_report(sweep).splitlines() == [
        "| attention | ListOps |",
        "|---|---|",
        "| full | 60.00 ± 14.14 (2) |",
        "| linear | 40.00 (1) |",
        "| LRA Table 1: Transformer (ours: full) | 36.37 |",
        "| LRA Table 1: Linear Trans. (ours: linear) | 16.13 |",
    ]
    assert (sweep / "speed_accuracy.png").exists()


def test_one_attention_map_per_variant_from_its_first_finished_cell(recall_sweep, attention_maps):
    report.write_report(recall_sweep)
    assert [(Path(d).name, p.name) for d, p in attention_maps] == [
        ("attention=full,pairs=4,seed=0", "attention_full.png"),
        ("attention=local,pairs=4,seed=0", "attention_local.png"),
    ]
    text = (recall_sweep / "report.md").read_text()
    assert "![attention map: full](attention_full.png)" in text


def test_lra_sweep_json_with_path_x_and_data_paths_as_axes(tmp_path):
    """sweep.json as the runner writes it for experiments/lra.py: the config file is an axis, and
    so are the data paths that come with some tasks; Path-X is pathfinder at resolution=128."""
    sweep = tmp_path / "lra"
    specs = {
        "listops": ("configs/listops.py", {}),
        "text": ("configs/text.py", {"config.task_options.source": "~/data/aclImdb_v1.tar.gz"}),
        "pathx": ("configs/pathfinder.py:resolution=128", {}),
    }
    accuracy = {"listops": 0.36, "text": 0.66, "pathx": 0.5}
    cells = []
    for task, (spec, paths) in specs.items():
        name = f"task={task},attention=full"
        overrides = {**paths, "config.model.attention": "full", "config.seed": 0}
        cells.append({"name": name, "config": spec, "overrides": overrides})
        config = {"task": task.replace("pathx", "pathfinder"), "seed": 0}
        config["task_options"] = {"resolution": 128} if task == "pathx" else {}
        config["model"] = {"attention": "full"}
        write_json(sweep / name / "config.json", config)
        write_json(sweep / name / "results.json", results(accuracy[task], memory=MIB))
    axes = ["config", "config.task_options.source", "config.model.attention", "config.seed"]
    write_json(sweep / "sweep.json", {"experiment": "lra", "axes": axes, "cells": cells})
    # Not every task but Path-X: no Avg, neither ours nor the published one.
    assert report.write_report(sweep).splitlines() == [
        "| attention | ListOps | Text | Path-X |",
        "|---|---|---|---|",
        "| full | 36.00 (1) | 66.00 (1) | 50.00 (1) |",
        "| LRA Table 1: Transformer (ours: full) | 36.37 | 64.27 | fail |",
    ]


def test_a_variants_own_options_label_its_rows_and_skip_the_other_variants(tmp_path):
    """experiments/window.py's shape: full at each distance, local at each window x distance. The
    window is local's option, so it labels local's rows; full's config holds a default window of
    its own, which must not split or label full's row."""
    sweep = tmp_path / "window"
    window_axis = "config.model.attention_options.local.window"
    cells = []
    runs = [("full", None, 4, 0.99), ("full", None, 8, 0.98)]
    runs += [("local", 4, 4, 1.0), ("local", 4, 8, 0.5), ("local", 8, 4, 1.0), ("local", 8, 8, 1.0)]
    for attention, window, distance, accuracy in runs:
        overrides = {"config.model.attention": attention}
        if window is not None:
            overrides[window_axis] = window
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items())
        name += f",distance={distance}"
        cells.append({"name": name, "config": f"configs/distance.py:distance={distance}",
                      "overrides": overrides})  # fmt: skip
        config = {"task": "distance", "seed": 0, "task_options": {"distance": distance},
                  "model": {"attention": attention,
                            "attention_options": {"local": {"window": window or 32}}}}  # fmt: skip
        write_json(sweep / name / "config.json", config)
        write_json(sweep / name / "results.json", results(accuracy, memory=MIB))
    axes = ["config.model.attention", "arg.distance", window_axis]
    write_json(sweep / "sweep.json", {"experiment": "window", "axes": axes, "cells": cells})
    assert report.write_report(sweep).splitlines() == [
        "| attention / window | distance=4 | distance=8 |",
        "|---|---|---|",
        "| full | 99.00 (1) | 98.00 (1) |",
        "| local, window=4 | 100.00 (1) | 50.00 (1) |",
        "| local, window=8 | 100.00 (1) | 100.00 (1) |",
    ]


# ----------------------------------------------------------------------------- best over an axis

LEARNING_RATE = "config.optimizer.learning_rate"
ZOOLOGY_AXES = ["config.model.attention", "arg.pairs", "arg.width", LEARNING_RATE, "config.seed"]
# (pairs, width) = (4, 64) for full: 1e-3 has the best test mean (96) and the best single seed's
# validation (99), but 1e-2 the best validation mean over seeds (87 against 82): 1e-2 is chosen.
FULL_4_64 = {  # (learning rate, seed) -> (test, best validation)
    (1e-3, 0): (0.97, 0.99),
    (1e-3, 1): (0.95, 0.65),
    (1e-2, 0): (0.90, 0.88),
    (1e-2, 1): (0.92, 0.86),
}


def zoology_accuracy(attention: str, pairs: int, width: int, rate: float, seed: int) -> tuple:
    """(test, best validation): elsewhere 1e-3 is better on both, by 10 points; seeds ±1."""
    if (attention, pairs, width) == ("full", 4, 64):
        return FULL_4_64[rate, seed]
    accuracy = {"full": 0.80, "linear": 0.50}[attention] + 0.1 * (width == 128) - 0.1 * (pairs == 8)
    accuracy += (-0.1 if rate == 1e-2 else 0.0) + (0.01 if seed == 0 else -0.01)
    return accuracy, accuracy


def zoology_sweep(folder: Path, best_over: str | None) -> Path:
    """experiments/zoology.py's shape: full and linear x pairs 4, 8 x width 64, 128 x learning
    rates 1e-3, 1e-2 x seeds 0, 1; sweep.json records `best_over` as the runner does."""
    cells = []
    for attention in ("full", "linear"):
        for pairs, width, rate, seed in np.ndindex(2, 2, 2, 2):
            pairs, width, rate = (4, 8)[pairs], (64, 128)[width], (1e-3, 1e-2)[rate]
            name = f"attention={attention},pairs={pairs},width={width},lr={rate},seed={seed}"
            overrides = {"config.model.attention": attention, LEARNING_RATE: rate,
                         "config.seed": seed}  # fmt: skip
            cells.append({"name": name, "config": f"configs/recall.py:pairs={pairs},width={width}",
                          "overrides": overrides})  # fmt: skip
            config = {"task": "recall", "seed": seed, "optimizer": {"learning_rate": rate},
                      "task_options": {"num_pairs": pairs, "length": 16 * pairs},
                      "model": {"attention": attention, "emb_dim": width}}  # fmt: skip
            test, validation = zoology_accuracy(attention, pairs, width, rate, seed)
            write_json(folder / name / "config.json", config)
            write_json(folder / name / "results.json",
                       results(test, memory=MIB, validation=validation))  # fmt: skip
    sweep = {"experiment": "zoology", "axes": ZOOLOGY_AXES, "best_over": best_over, "cells": cells}
    write_json(folder / "sweep.json", sweep)
    return folder


def test_best_over_picks_the_best_mean_validation_value_and_reports_its_test(tmp_path):
    sweep = zoology_sweep(tmp_path / "zoology", best_over=None)
    lines = report.write_report(sweep, best_over=LEARNING_RATE).splitlines()
    assert lines == [
        "| attention | pairs=4, width=64 | pairs=4, width=128 | pairs=8, width=64 "
        "| pairs=8, width=128 |",
        "|---|---|---|---|---|",
        "| full | 91.00 ± 1.41 (2) @1e-2 | 90.00 ± 1.41 (2) @1e-3 | 70.00 ± 1.41 (2) @1e-3 "
        "| 80.00 ± 1.41 (2) @1e-3 |",
        "| linear | 50.00 ± 1.41 (2) @1e-3 | 60.00 ± 1.41 (2) @1e-3 | 40.00 ± 1.41 (2) @1e-3 "
        "| 50.00 ± 1.41 (2) @1e-3 |",
    ]
    text = (sweep / "report.md").read_text()
    assert "Best over learning_rate: each entry is the test accuracy of the learning_rate" in text
    assert (
        "| full | pairs=4, width=64 | 1e-2 | 1e-3: 82.00 (2); 1e-2: 87.00 (2) | 87.00 ± 1.41 (2) "
        "| 10.00 | 1.0 (host_rss) | 1,234 |"
    ) in text


def test_best_over_is_the_csv_column_and_the_plots_runs(tmp_path):
    sweep = zoology_sweep(tmp_path / "zoology", best_over=LEARNING_RATE)
    report.write_report(sweep)  # sweep.json's best_over
    with (sweep / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[:4] == ["attention", "pairs", "width", "chosen_learning_rate"]
    chosen = [(r["attention"], r["pairs"], r["width"], r["chosen_learning_rate"]) for r in rows]
    assert chosen[:2] == [("full", "4", "64", "0.01"), ("full", "4", "128", "0.001")]
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(0.91)
    assert {r["seeds"] for r in rows} == {"2"}
    # Zoology's figure: a panel per (length, pairs), a line per variant, the chosen runs.
    table = build_table(load_sweep(sweep)[2], ZOOLOGY_AXES, LEARNING_RATE)
    assert width_axis(table) == "arg.width"
    panels = width_panels(table, "arg.width")
    assert list(panels) == [(64, 4), (128, 8)]
    assert panels[64, 4] == {
        "full": [(64, pytest.approx(91.0)), (128, pytest.approx(90.0))],
        "linear": [(64, pytest.approx(50.0)), (128, pytest.approx(60.0))],
    }
    assert (sweep / "accuracy_vs_width.png").stat().st_size > 1000
    text = (sweep / "report.md").read_text()
    assert "](accuracy_vs_width.png)" in text and "each point the best learning_rate" in text
    assert "](accuracy_vs_pairs.png)" in text


def test_sweep_json_best_over_applies_and_an_explicit_flag_wins(tmp_path, capsys):
    sweep = zoology_sweep(tmp_path / "zoology", best_over=LEARNING_RATE)
    assert report.main([str(sweep), "--best-over", "arg.width"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == (
        "| attention | pairs=4, learning_rate=0.001 | pairs=4, learning_rate=0.01 "
        "| pairs=8, learning_rate=0.001 | pairs=8, learning_rate=0.01 |"
    )
    plain = zoology_sweep(tmp_path / "plain", best_over=None)
    assert "learning_rate=0.01" in report.write_report(plain)  # no best-over: a column
    # `--best-over none` switches sweep.json's off: the learning rate is a column again.
    assert report.main([str(sweep), "--best-over", "none"]) == 0
    assert "pairs=4, width=64, learning_rate=0.01" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("axis", ["config.model.emb_dim", "config.seed", "config.model.attention"])
def test_a_best_over_axis_that_is_not_swept_is_a_one_line_error(tmp_path, capsys, axis):
    sweep = zoology_sweep(tmp_path / "zoology", best_over=None)
    assert report.main([str(sweep), f"--best-over={axis}"]) == 2
    assert capsys.readouterr().err == (
        f"error: --best-over {axis} is not a swept axis; swept: arg.pairs, arg.width, "
        "config.optimizer.learning_rate\n"
    )
    assert report.main([str(sweep), "--best-over"]) == 2
    assert capsys.readouterr().err.startswith("usage: ")


def test_each_segment_of_a_training_mix_gets_its_test_accuracy(tmp_path):
    """Runs trained on MQAR's mix (results.json's test_accuracy_by_split): a table and CSV
    columns of each segment's own test accuracy, mean ± sample std over the seeds; a sweep
    without a mix has neither."""
    sweep = tmp_path / "mix"
    scores = {
        ("full", 0): (0.9, {"test_64x4": 1.0, "test_128x8": 0.8}),
        ("full", 1): (0.7, {"test_64x4": 0.8, "test_128x8": 0.6}),
        ("linear", 0): (0.5, {"test_64x4": 0.75, "test_128x8": 0.25}),
    }
    for (attention, seed), (accuracy, by_split) in scores.items():
        directory = sweep / f"attention={attention},seed={seed}"
        config = {"task": "recall", "seed": seed, "model": {"attention": attention}}
        write_json(directory / "config.json", config)
        saved = results(accuracy, memory=MIB) | {"test_accuracy_by_split": by_split}
        write_json(directory / "results.json", saved)
    report.write_report(sweep)
    text = (sweep / "report.md").read_text()
    section = text.split("## Test accuracy per segment of the training mix (%)")[1]
    assert section.split("\n\n")[2].splitlines() == [
        "| attention | column | test_64x4 % | test_128x8 % |",
        "|---|---|---|---|",
        "| full | all | 90.00 ± 14.14 (2) | 70.00 ± 14.14 (2) |",
        "| linear | all | 75.00 (1) | 25.00 (1) |",
    ]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [(r["test_64x4_accuracy_mean"], r["test_128x8_accuracy_mean"]) for r in rows] == [
        ("0.9", "0.7"),
        ("0.75", "0.25"),
    ]


def test_no_segment_table_without_a_mix(recall_sweep):
    report.write_report(recall_sweep)
    assert "per segment" not in (recall_sweep / "report.md").read_text()
    assert not any(
        "test_64x4" in name for name in next(csv.reader((recall_sweep / "results.csv").open()))
    )


def test_protocols_sit_side_by_side_with_their_difference(tmp_path):
    """experiments/spt.py's sweep: each variant's rows from scratch and self-pretrained (the
    configs' `pretrain` argument), then the difference in points, per task."""
    sweep = tmp_path / "spt"
    accuracy = {
        ("listops", "full", "none"): 0.36,
        ("listops", "full", "masked"): 0.45,
        ("pathfinder", "full", "none"): 0.70,
        ("pathfinder", "full", "masked"): 0.765,
        ("listops", "local", "none"): 0.30,
        ("listops", "local", "masked"): 0.28,
    }
    cells = []
    for (task, attention, protocol), value in accuracy.items():
        name = f"task={task},attention={attention},pretrain={protocol}"
        spec = f"configs/{task}.py:size=tiny,pretrain={protocol}"
        overrides = {"config.model.attention": attention, "config.seed": 0}
        cells.append({"name": name, "config": spec, "overrides": overrides})
        config = {"task": task, "seed": 0, "model": {"attention": attention}}
        config["task_options"] = {"resolution": 32} if task == "pathfinder" else {}
        config["pretrain"] = {"steps": 0 if protocol == "none" else 500, "objective": "masked"}
        write_json(sweep / name / "config.json", config)
        write_json(sweep / name / "results.json", results(value, memory=MIB))
    axes = ["config", "config.model.attention", "arg.pretrain", "config.seed"]
    write_json(sweep / "sweep.json", {"experiment": "spt", "axes": axes, "cells": cells})
    lines = report.write_report(sweep).splitlines()
    assert lines[:8] == [
        "| attention / pretrain | ListOps | Pathfinder |",
        "|---|---|---|",
        "| full, pretrain=none | 36.00 (1) | 70.00 (1) |",
        "| full, pretrain=masked | 45.00 (1) | 76.50 (1) |",
        "| full: pretrain=masked − none | +9.00 | +6.50 |",
        "| local, pretrain=none | 30.00 (1) | – |",
        "| local, pretrain=masked | 28.00 (1) | – |",
        "| local: pretrain=masked − none | -2.00 | – |",
    ]
