"""The sweep runner: cell names, selection, dry runs and errors in-process; then real tiny cells
(each a training subprocess) for running, skipping, failing, killing and resuming, and submitit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from research.errors import UserError
from research.sweeps import executors as sweep_executors
from research.sweeps import runner as sweep
from research.sweeps.grid import Experiment, load_experiment, make_cells, select

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def experiment_file(folder: Path, grid: str, config: str = "configs/recall.py:size=tiny",
                    extra: str = "", name: str = "exp.py") -> str:  # fmt: skip
    """Writes an experiment file whose get_hyper returns `grid` (an expression over h)."""
    path = folder / name
    path.write_text(
        f'"""A test experiment."""\n\nCONFIG = {config!r}\n{extra}\n\n'
        f"def get_hyper(h):\n    return {grid}\n"
    )
    return str(path)


def names(grid: list[dict], config: str = "configs/recall.py") -> list[str]:
    return [cell.name for cell in make_cells(Experiment("x.py", config, grid, None), "runs/x")]


# ----------------------------------------------------------------------------- cells, in-process


def test_names_use_the_varying_keys_short_and_in_grid_order():
    grid = [
        {"config.model.attention": a, "config.seed": s, "config.num_train_steps": 20}
        for a in ("full", "local")
        for s in (0, 1)
    ]
    assert names(grid) == [
        "attention=full,seed=0",
        "attention=full,seed=1",
        "attention=local,seed=0",
        "attention=local,seed=1",
    ]


def test_names_lengthen_colliding_keys_and_shorten_config_files():
    keys = ("config.model.attention", "arg.attention", "config")
    values = [
        ("full", "local", "configs/text.py"),
        ("local", "local", "configs/text.py"),
        ("full", "full", "configs/a/b.py:x=1"),
        ("full", "full", "configs/text.py"),
    ]
    assert names([dict(zip(keys, cell, strict=True)) for cell in values]) == [
        "model.attention=full,arg.attention=local,config=text",
        "model.attention=local,arg.attention=local,config=text",
        "model.attention=full,arg.attention=full,config=b:x=1",
        "model.attention=full,arg.attention=full,config=text",
    ]


def test_names_leave_out_keys_that_the_keys_before_them_determine():
    """LRA's data paths follow from its task: they vary, but would only lengthen the names."""
    tasks = [("configs/listops.py", None), ("configs/text.py", "~/data/aclImdb_v1.tar.gz")]
    grid = [
        {"config": config, **({"config.task_options.source": source} if source else {}),
         "config.seed": seed}
        for config, source in tasks
        for seed in (0, 1)
    ]  # fmt: skip
    assert names(grid) == ["config=listops,seed=0", "config=listops,seed=1",
                           "config=text,seed=0", "config=text,seed=1"]  # fmt: skip


def test_one_cell_is_base_unsafe_characters_are_replaced_and_duplicates_refused():
    assert names([{"config.seed": 0}]) == ["base"]
    assert names([{"config.data_dir": "/a b"}, {"config.data_dir": "/c"}]) == [
        "data_dir=_a_b",
        "data_dir=_c",
    ]
    with pytest.raises(UserError, match="both named 'seed=1'"):
        names([{"config.seed": 1}, {"config.seed": "1"}])


def test_cell_specs_merge_config_arguments_and_overrides_keep_config_keys():
    grid = [
        {"arg.pairs": 16, "config.seed": 1},
        {"config": "configs/text.py:size=tiny", "arg.attention": "local"},
    ]
    cells = make_cells(Experiment("x.py", "configs/recall.py:size=tiny,pairs=8", grid, None), "w")
    assert cells[0].spec == "configs/recall.py:size=tiny,pairs=16"
    assert cells[0].overrides == {"config.seed": 1}
    assert cells[1].spec == "configs/text.py:size=tiny,attention=local"
    assert cells[1].workdir == os.path.join("w", cells[1].name)


def grid_cells():
    grid = [
        {"config.model.attention": a, "config.seed": s} for a in ("full", "local") for s in (0, 1)
    ]
    return make_cells(Experiment("x.py", "configs/recall.py", grid, None), "w")


def test_only_takes_short_or_full_keys_and_values_as_strings():
    selected = lambda *only: [c.name for c in select(grid_cells(), list(only), None)]
    assert selected("attention=local") == ["attention=local,seed=0", "attention=local,seed=1"]
    assert selected("config.seed=1", "model.attention=full") == ["attention=full,seed=1"]
    assert selected("seed=0", "seed=1") == [c.name for c in grid_cells()]
    with pytest.raises(UserError, match="--only nope: is not a key of the grid; the keys are: "):
        selected("nope=1")
    with pytest.raises(UserError, match="matches no cell"):
        selected("seed=7")


def test_shards_split_the_full_grid_before_only():
    shards = [[c.index for c in select(grid_cells(), [], f"{i}/3")] for i in range(3)]
    assert shards == [[0, 3], [1], [2]]
    assert [c.index for c in select(grid_cells(), ["seed=1"], "1/2")] == [1, 3]
    for bad in ("2/2", "1", "a/2", "-1/2"):
        with pytest.raises(UserError, match="--shard"):
            select(grid_cells(), [], bad)


# ----------------------------------------------------------------------------- the command line


def test_dry_run_prints_pasteable_commands_and_writes_nothing(tmp_path, capsys):
    grid = (
        'h.product([h.sweep("config.model.attention", ["full", "local"]), h.fixed("arg.pairs", 4)])'
    )
    path = experiment_file(tmp_path, grid, extra='TPU = {"accelerator": "v4-8", "zone": "z1"}')
    workdir = tmp_path / "runs"
    assert (
        sweep.main([path, "--workdir", str(workdir), "--dry-run", "--only", "attention=local"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    cell_dir = f"{workdir}/attention=local"
    assert lines[1:] == [
        "attention=local",
        "  ./launch.sh train --config configs/recall.py:size=tiny,pairs=4 "
        f"--config.model.attention=local --workdir {cell_dir}",
        "  ./launch.sh tpu --name NAME --zone z1 --accelerator v4-8 -- --config "
        f"configs/recall.py:size=tiny,pairs=4 --config.model.attention=local --workdir {cell_dir}",
    ]
    assert not workdir.exists()


def test_dry_run_checks_every_cell_and_marks_the_invalid_ones(tmp_path, capsys):
    grid = 'h.sweep("config.model.nonexistent_field", [1, 2])'
    path = experiment_file(tmp_path, grid)
    workdir = tmp_path / "runs"
    assert sweep.main([path, "--workdir", str(workdir), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert out.count("  INVALID: ") == 2
    assert "--config.model.nonexistent_field: the config has no field 'nonexistent_field'" in out
    assert "# 2 of 2 cells are invalid and would fail" in out
    assert not workdir.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["x.py", "--executor", "nope"], "argument --executor: invalid choice: 'nope'"),
        ([], "the following arguments are required: experiment"),
        (["x.py", "--parallel", "two"], "argument --parallel: invalid int value: 'two'"),
    ],
)
def test_argument_mistakes_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        sweep.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ./launch.sh sweep: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ('CONFIG = "configs/recall.py"\n', "has no get_hyper"),
        ("def get_hyper(h):\n    return []\n", "needs CONFIG"),
        ('CONFIG = "c.py"\ndef get_hyper(h):\n    return h.sweep("seed", [1])\n', "'seed'"),
        ('CONFIG = "c.py"\ndef get_hyper(h):\n    return 1 / 0\n', "ZeroDivisionError"),
        (
            'CONFIG = "c.py"\nBEST_OVER = 3\ndef get_hyper(h):\n    return h.sweep("seed", [1])\n',
            "BEST_OVER=3 must be a swept axis's name",
        ),
    ],
)
def test_experiment_file_mistakes_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "exp.py"
    if content is not None:
        path.write_text(content)
    assert sweep.main([str(path), "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_resolving_reports_bad_fields_and_values_in_one_line():
    def error(**overrides):
        cell = make_cells(
            Experiment("x.py", "configs/recall.py:size=tiny", [overrides], None), "w"
        )[0]
        with pytest.raises(UserError) as raised:
            sweep.resolve(cell)
        assert "\n" not in str(raised.value)
        return str(raised.value)

    assert "the config has no field 'nope'" in error(**{"config.model.nope": 1})
    assert "num_train_steps='many' is not valid; it must be an integer" in error(
        **{"config.num_train_steps": "many"}
    )
    assert "config.model.attention='x' is not valid" in error(**{"config.model.attention": "x"})
    assert "config argument pairs='x' must be a positive integer" in error(**{"arg.pairs": "x"})
    assert "cannot read 'configs/nope.py'" in error(config="configs/nope.py")


EXPERIMENTS = sorted(Path(ROOT, "experiments").glob("*.py"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_shipped_experiment_builds_cells_whose_configs_are_valid(path):
    """What `--dry-run` shows must also run: every cell resolves (configs, arguments, fields)."""
    experiment = load_experiment(str(path))
    assert experiment.grid
    sweep.declared_best_over(experiment)  # a BEST_OVER it sets is one of its axes
    cells = make_cells(experiment, "runs/x")
    assert len({cell.name for cell in cells}) == len(cells)
    for cell in cells[:: max(1, len(cells) // 12)]:  # a spread of cells: resolving takes ~0.1 s
        sweep.resolve(cell)


def test_the_lra_experiment_is_six_tasks_by_nine_variants_by_three_seeds(capsys):
    assert sweep.main([str(Path(ROOT, "experiments", "lra.py")), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 162 of 162 cells")
    tasks = ("listops", "text", "retrieval", "image", "pathfinder", "pathfinder:resolution=128")
    for task in tasks:
        assert f"\nconfig={task},attention=performer,seed=2\n" in out
    assert out.count("./launch.sh tpu ") == 162


def test_best_over_is_recorded_in_sweep_json_and_must_be_a_swept_axis(tmp_path, capsys):
    grid = 'h.product([h.sweep("config.model.attention", ["full", "local"]), ' \
        'h.sweep("config.optimizer.learning_rate", [1e-3, 1e-2])])'  # fmt: skip
    rate = 'BEST_OVER = "config.optimizer.learning_rate"'
    experiment = load_experiment(experiment_file(tmp_path, grid, extra=rate))
    best_over = sweep.declared_best_over(experiment)
    assert best_over == "config.optimizer.learning_rate"
    sweep.write_sweep_json(experiment, make_cells(experiment, "runs/x"), str(tmp_path), best_over)
    assert json.loads((tmp_path / "sweep.json").read_text())["best_over"] == best_over
    path = experiment_file(tmp_path, grid, extra='BEST_OVER = "config.seed"', name="bad.py")
    assert sweep.main([path, "--workdir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: BEST_OVER config.seed is not a swept axis; swept: "
        "config.optimizer.learning_rate\n"
    )
    assert not (tmp_path / "runs").exists()


def test_the_error_of_a_failed_cell_is_its_last_error_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("old\nerror: an earlier attempt\n")
    offset = log.stat().st_size
    with open(log, "a") as file:
        file.write("x\nerror: the loss became nan\ntrain: 5%\r10%\n")
    assert sweep_executors.last_error(log, offset) == "the loss became nan"
    with open(log, "a") as file:
        file.write("Traceback\nValueError: boom\n")
    assert sweep_executors.last_error(log, log.stat().st_size - 17) == "ValueError: boom"
    assert sweep_executors.duration(151) == "2m31s" and sweep_executors.duration(52) == "52s"


# ----------------------------------------------------------------------------- real cells


def tiny_grid(data_dir: str, cache: Path, steps: int = 20, every: int = 10) -> str:
    """Fixed overrides that make a recall cell train in seconds, and the variable part `{}`."""
    fixed = {
        "config.num_train_steps": steps,
        "config.task_options.num_train": 256,
        "config.task_options.num_val": 64,
        "config.task_options.num_test": 64,
        "config.eval_every_steps": 0,
        "config.log_every_steps": 10,
        "config.checkpoint_every_steps": every,
        "config.data_dir": data_dir,
        "config.compilation_cache_dir": str(cache),
    }
    factors = ", ".join(f"h.fixed({k!r}, {v!r})" for k, v in fixed.items())
    return f"h.product([{factors}, {{}}])"


def run_sweep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "research.sweeps.runner", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_sweep_runs_its_cells_fails_the_broken_ones_alone_and_skips_finished_ones(
    data_dir, tmp_path, monkeypatch, capsys
):
    variable = (
        'h.chainit([h.sweep("config.model.attention", ["full", "local", "nope"]), '
        'h.product([h.fixed("config.model.attention", "full"), '
        'h.fixed("config.optimizer.learning_rate", 1e30)])])'
    )
    path = experiment_file(tmp_path, tiny_grid(data_dir, tmp_path / "cache").format(variable))
    workdir = tmp_path / "runs"
    done = run_sweep(path, "--workdir", str(workdir), "--parallel", "2", "--no-report")
    assert done.returncode == 1, done.stderr
    nan, bad = "attention=full,learning_rate=1e+30", "attention=nope"
    for name in ("attention=full", "attention=local"):
        assert (workdir / name / "results.json").is_file()
        assert f"] {name}  finished in " in done.stdout
        assert not (workdir / name / "failed.json").exists()
    nan_failure = json.loads((workdir / nan / "failed.json").read_text())
    assert nan_failure["returncode"] == 1
    assert nan_failure["error"].startswith("the training loss became nan")
    assert json.loads((workdir / bad / "failed.json").read_text())["returncode"] == 2
    assert not (workdir / bad / "log.txt").exists()  # never launched
    assert "2 finished, 2 failed" in done.stdout
    assert f"FAILED {bad}: config.model.attention='nope' is not valid" in done.stdout
    assert f"FAILED {nan}: the training loss became nan" in done.stdout
    saved = json.loads((workdir / "sweep.json").read_text())
    assert saved["axes"] == ["config.model.attention", "config.optimizer.learning_rate"]
    assert [c["name"] for c in saved["cells"]] == ["attention=full", "attention=local", bad, nan]
    cell = json.loads((workdir / "attention=local" / "cell.json").read_text())
    assert cell["overrides"]["config.model.attention"] == "local"
    assert cell["command"].startswith("./launch.sh train --config configs/recall.py:size=tiny ")

    # Again, in-process, with cells that "fail" at once: finished cells are skipped, the rest rerun.
    launched = []

    class Failing:
        def __init__(self, command, **kwargs):
            launched.append(command[command.index("--workdir") + 1])
            self.pid = -1

        def wait(self):
            return 3

    monkeypatch.setattr(sweep_executors.subprocess, "Popen", Failing)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(
        "research.sweeps.report.write_report", lambda folder, best_over: f"report of {folder}"
    )
    assert sweep.main([path, "--workdir", str(workdir)]) == 1
    out = capsys.readouterr().out
    assert launched == [str(workdir / nan)]
    assert "[1/4] attention=full  skipped (finished)" in out
    assert "[2/4] attention=local  skipped (finished)" in out
    assert "0 finished, 2 skipped, 2 failed" in out
    assert f"report of {workdir}" in out
    assert json.loads((workdir / nan / "failed.json").read_text())["returncode"] == 3


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_orphans_and_resumes_its_cell(data_dir, tmp_path):
    grid = tiny_grid(data_dir, tmp_path / "cache", steps=40, every=5).format(
        "h.fixed('config.seed', 0)"
    )
    path = experiment_file(tmp_path, grid)
    workdir, cell = tmp_path / "runs", tmp_path / "runs" / "base"
    command = [
        sys.executable,
        "-m",
        "research.sweeps.runner",
        path,
        "--workdir",
        str(workdir),
        "--no-report",
    ]

    def start_and_wait_for_a_checkpoint() -> tuple[subprocess.Popen, list[psutil.Process]]:
        before = set(os.listdir(cell / "checkpoints")) if (cell / "checkpoints").exists() else set()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 180
        while (
            not set(os.listdir(cell / "checkpoints") if (cell / "checkpoints").exists() else [])
            - before
        ):
            assert time.monotonic() < deadline and process.poll() is None, "no checkpoint came"
            time.sleep(0.05)
        return process, psutil.Process(process.pid).children(recursive=True)

    # SIGTERM: passed on to the cell, which saves a checkpoint; the sweep exits 75.
    process, children = start_and_wait_for_a_checkpoint()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 75, out
    assert "run the same command again to resume" in out
    assert not any(child.is_running() for child in children)
    # SIGKILL: the kernel sends the cell SIGTERM (PR_SET_PDEATHSIG), so nothing is left running.
    process, children = start_and_wait_for_a_checkpoint()
    process.kill()
    process.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=120)
    assert not alive, "orphaned cell processes"
    finished = run_sweep(path, "--workdir", str(workdir), "--no-report")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "[1/1] base  finished in" in finished.stdout
    log = (cell / "log.txt").read_text()
    assert log.count("resumed from the checkpoint at step") == 2
    assert json.loads((cell / "results.json").read_text())["num_train_steps"] == 40


@pytest.mark.slow
def test_submitit_local_runs_the_cells_as_a_job_array(data_dir, tmp_path):
    grid = tiny_grid(data_dir, tmp_path / "cache").format("h.fixed('config.seed', 3)")
    path = experiment_file(tmp_path, grid)
    workdir = tmp_path / "runs"
    done = run_sweep(path, "--workdir", str(workdir), "--executor", "submitit_local",
                     "--slurm", "timeout_min=10", "--no-report")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted 1 cells as job array" in done.stdout
    assert (workdir / "base" / "results.json").is_file()
    assert (workdir / "submitit").is_dir()


# ----------------------------------------------------------------------------- CPU pinning


def test_cpu_slots_split_the_cpus_evenly_and_disjointly():
    assert sweep_executors.cpu_slots([1, 0], 2) == [frozenset({0}), frozenset({1})]
    assert sweep_executors.cpu_slots(list(range(7)), 3) == [
        frozenset({0, 1, 2}),
        frozenset({3, 4}),
        frozenset({5, 6}),
    ]
    assert sweep_executors.cpu_slots([0, 1], 3) is None  # more workers than CPUs: no pinning
    assert sweep_executors.cpu_slots([0, 1], 1) is None  # one worker: all of them
    assert [sweep_executors.cpu_list(s) for s in ({0, 1, 2}, {4}, {1, 3})] == ["0-2", "4", "1,3"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU pinning is Linux's")
def test_a_pinned_cell_runs_on_its_cpus_only(tmp_path, monkeypatch):
    """run_cell's child starts on the worker's CPUs, so XLA sizes its thread pool to them."""
    cpus = frozenset({min(os.sched_getaffinity(0))})
    [cell] = make_cells(Experiment("x.py", "configs/recall.py", [{}], None), str(tmp_path))
    show = "import os; print('cpus', sorted(os.sched_getaffinity(0)))"
    monkeypatch.setattr(type(cell), "train_command", lambda self: [sys.executable, "-c", show])
    sweep_executors.run_cell(cell, cpus=cpus)
    assert f"cpus {sorted(cpus)}" in Path(cell.workdir, "log.txt").read_text()
