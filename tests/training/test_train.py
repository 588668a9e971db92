"""train_and_evaluate end to end on tiny ListOps, the schedule, and config errors that must stop a
run before anything is compiled or written."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from configs import base, listops
from research.errors import UserError
from research.training.metrics import read_metrics
from research.training.optim import OptimizerConfig, learning_rate_schedule
from research.training.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_lra_rsqrt_schedule_values():
    schedule = learning_rate_schedule(
        OptimizerConfig.from_config(listops.get_config().optimizer), 5_000
    )
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(schedule(500), 0.05 * 0.5 / np.sqrt(1000), rtol=1e-6)
    np.testing.assert_allclose(schedule(1000), 0.05 / np.sqrt(1000), rtol=1e-6)  # peak ~1.58e-3
    np.testing.assert_allclose(schedule(4000), 0.05 / np.sqrt(4000), rtol=1e-6)


def test_cosine_and_constant_schedules():
    optimizer = base.get_config().optimizer
    optimizer.update(schedule="cosine", learning_rate=1e-3, warmup_steps=10)
    cosine = learning_rate_schedule(OptimizerConfig.from_config(optimizer), 110)
    np.testing.assert_allclose(
        [cosine(5), cosine(10), cosine(60), cosine(110)], [5e-4, 1e-3, 5e-4, 0.0], atol=1e-9
    )
    optimizer.schedule = "constant"
    constant = learning_rate_schedule(OptimizerConfig.from_config(optimizer), 110)
    np.testing.assert_allclose([constant(5), constant(10), constant(100)], [5e-4, 1e-3, 1e-3])


def test_train_and_evaluate_writes_metrics_tensorboard_and_results(tiny_listops, tmp_path):
    results = train_and_evaluate(tiny_listops, str(tmp_path))
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["test_examples"] == 64
    assert results["test_params"] == "last" and results["test_params_step"] == 20
    assert results["num_params"] > 0
    with open(tmp_path / "results.json") as file:
        written = json.load(file)
    # The file adds this run's speed and memory, which the returned results leave out.
    source = "host_rss" if jax.default_backend() == "cpu" else "device"
    assert written.pop("steps_per_second") > 0 and written.pop("peak_memory_bytes") > 0
    assert written.pop("peak_memory_source") == source and written == results
    records = read_metrics(str(tmp_path))
    by_split = {
        split: [r for r in records if r["split"] == split]
        for split in ("train", "validation", "test")
    }
    assert [r["step"] for r in by_split["train"]] == [5, 10, 15, 20]
    assert [r["step"] for r in by_split["validation"]] == [10, 20]
    assert by_split["test"][0]["accuracy"] == results["test_accuracy"]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] != "startup")
    assert [r["split"] for r in records if "time_to_first_step" in r] == ["startup"]
    assert by_split["train"][0]["steps_per_second"] > 0
    assert by_split["train"][-1]["peak_memory_bytes"] > 0
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/accuracy", "validation/accuracy", "test/accuracy"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]
    with open(tmp_path / "config.json") as file:
        assert json.load(file)["model"]["vocab_size"] == 16


def test_best_validation_parameters_are_reported_as_such(tiny_listops, tmp_path):
    tiny_listops.test_params = "best_val"
    results = train_and_evaluate(tiny_listops, str(tmp_path))
    assert results["test_params"] == "best_val"
    assert results["test_params_step"] == results["best_validation_step"] in (10, 20)


@pytest.mark.slow
def test_tiny_listops_learns_well_above_the_majority_class(tiny_listops, tmp_path):
    tiny_listops.task_options.update(num_train=3_000, num_val=300, num_test=300)
    tiny_listops.num_train_steps = 400
    tiny_listops.eval_every_steps = 0
    results = train_and_evaluate(tiny_listops, str(tmp_path))
    # The most frequent label covers about 17% of these expressions.
    assert results["test_accuracy"] > 0.3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model.attention", "nope", "config.model.attention='nope' is not valid"),
        ("model.max_len", 16, "inputs of up to .* tokens but config.model.max_len=16"),
        ("optimizer.schedule", "linear", "config.optimizer.schedule='linear'"),
        ("batch_size", 0, "config.batch_size=0"),
        ("compute_dtype", "int8", "config.compute_dtype='int8' is not valid"),
        ("task", "sudoku", "config.task='sudoku' is not valid; choose one of"),
        ("task_options.release_dir", "/no/such/folder", "release_dir='/no/such/folder'"),
        (
            "stop_at_validation_accuracy",
            1.5,
            r"stop_at_validation_accuracy=1.5 must lie in \[0, 1\]",
        ),
        ("pretrain.objective", "bert", "config.pretrain.objective='bert' is not valid"),
        ("pretrain.mask_rate", 0.0, r"config.pretrain.mask_rate=0.0 must lie in \(0, 1\)"),
        ("pretrain.steps", -5, "config.pretrain.steps=-5"),
        ("pretrain.optimizer.schedule", "linear", "config.pretrain.optimizer.schedule='linear'"),
        ("init_from", "/some/run", "config.init_from='/some/run' needs config.pretrain"),
    ],
)
def test_bad_config_fails_before_writing_anything(tiny_listops, tmp_path, field, value, message):
    *sections, name = field.split(".")
    target = tiny_listops
    for section in sections:
        target = target[section]
    target[name] = value
    workdir = tmp_path / "run"
    with pytest.raises(UserError, match=message) as error:
        train_and_evaluate(tiny_listops, str(workdir))
    assert "\n" not in str(error.value)
    assert not workdir.exists()


def test_config_argument_errors():
    with pytest.raises(UserError, match="config argument size='huge'"):
        listops.get_config("size=huge")
    with pytest.raises(UserError, match="'depth=3' is not valid; use key=value with keys"):
        listops.get_config("depth=3")


def run_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "research.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config", "configs/listops.py:size=tiny,attention=nope"],
            "error: config.model.attention='nope' is not valid; choose one of: ",
        ),
        (
            ["--config", "configs/listops.py:size=huge"],
            "error: config argument size='huge' is not valid; choose one of: base, tiny",
        ),
        (
            ["--config", "configs/listops.py:size=tiny", "--config.model.nope=3"],
            "error: --config.model.nope: the config has no field 'nope'",
        ),
        (
            ["--config", "configs/listops.py:size=tiny", "--config.model.num_layers=two"],
            "error: --config.model.num_layers='two' is not valid; it must be an integer",
        ),
        (["--config", "configs/missing.py"], "error: --config: cannot read 'configs/missing.py'"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tmp_path, args, message):
    result = run_cli(*args, "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_trains_and_prints_test_accuracy(data_dir, tmp_path):
    result = run_cli(
        "--config",
        "configs/listops.py:size=tiny",
        "--config.num_train_steps=10",
        "--config.eval_every_steps=0",
        "--config.task_options.num_train=200",
        f"--config.data_dir={data_dir}",
        "--workdir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert os.path.exists(tmp_path / "results.json")


def test_bfloat16_compute_keeps_float32_parameters(tiny_listops, tmp_path):
    tiny_listops.compute_dtype = "bfloat16"
    tiny_listops.num_train_steps = 10
    results = train_and_evaluate(tiny_listops, str(tmp_path))
    records = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert all(np.isfinite(r["loss"]) for r in records) and 0 <= results["test_accuracy"] <= 1
    from tests.training.test_checkpoint import saved_state

    params = saved_state(tmp_path)["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype("float32")}
