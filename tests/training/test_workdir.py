"""A workdir is never damaged by a refused command: resuming across a shape change, a second run
in a busy workdir, a workdir that is a file or unwritable, a bad option found before any data is
generated. Plus the locks behind it: a killed holder never leaves one stuck, and processes that
need the same dataset at once build it once."""

import os
import subprocess
import sys
import time

import pytest

from configs import listops
from research import tasks
from research.errors import UserError
from research.training import train
from research.training.locks import BuildLock, WorkdirLock
from tests.training.test_faults import ROOT
from tests.training.workdir_testing import digest

pytestmark = pytest.mark.slow


def tiny_config(data_dir):
    config = listops.get_config("size=tiny")
    config.data_dir = data_dir
    config.task_options.update(num_train=400, num_val=64, num_test=64)
    config.num_train_steps, config.log_every_steps, config.eval_every_steps = 6, 3, 0
    return config


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    train.train_and_evaluate(tiny_config(data_dir), workdir)
    return workdir


def refuse(config, workdir, match: str) -> str:
    """Runs `config` in `workdir`, expecting a one-line UserError matching `match`."""
    with pytest.raises(UserError, match=match) as error:
        train.train_and_evaluate(config, workdir)
    assert "\n" not in str(error.value)
    return str(error.value)


def set_field(config, field: str, value) -> None:
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"allow_config_change": True, "model.emb_dim": 128},
            r"checkpoint at step 6 .* does not fit this config: params\.\S+ is \(64, 4, 16\) in "
            r"the checkpoint but \(128, 4, 16\) in this config",
        ),
        (
            {"allow_config_change": True, "model.num_layers": 3},
            r"this config makes params\.encoder\.blocks\.2\.\S+ \(\d+.*\), which the "
            "checkpoint lacks",
        ),
        ({"model.num_layers": 3}, r"holds checkpoints of a different run .*num_layers: 2 -> 3"),
        (
            {"model.attention": "t5", "model.attention_options.t5.t5_num_buckets": 31},
            r"t5\.t5_num_buckets=31 is not valid; with t5_bidirectional=True it must be even",
        ),
    ],
)
def test_a_refused_resume_leaves_the_finished_workdir_unchanged(data_dir, finished, changes, match):
    before = digest(finished)
    config = tiny_config(data_dir)
    config.num_train_steps = 9
    for field, value in changes.items():
        set_field(config, field, value)
    refuse(config, finished, match)
    assert digest(finished) == before


def test_a_second_run_in_a_busy_workdir_stops_at_once_naming_the_first(data_dir, finished):
    before = digest(finished)
    with WorkdirLock(finished):  # as a running run holds it
        message = refuse(tiny_config(data_dir), finished, "is in use by pid")
        assert f"pid {os.getpid()} on" in message
    assert digest(finished) == before
    assert not os.path.exists(os.path.join(finished, WorkdirLock.NAME))


def test_a_lock_whose_holder_was_killed_is_taken_over(tmp_path):
    holder = (
        "from research.training.locks import WorkdirLock; import os, sys; WorkdirLock(sys.argv[1])"
    )
    holder += ".__enter__(); os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", holder, str(tmp_path)], cwd=ROOT, check=False)
    assert os.path.exists(tmp_path / WorkdirLock.NAME)  # left behind, but no longer held
    with WorkdirLock(str(tmp_path)) as lock:
        assert lock.owner().startswith(f"pid {os.getpid()} ")


@pytest.fixture
def no_data_built(monkeypatch):
    """Fails the test if anything tries to build or read a dataset."""

    def refuse_to_build(*args, **kwargs):
        raise AssertionError("the dataset was prepared before the config was refused")

    monkeypatch.setattr(tasks, "prepare_builder", refuse_to_build)


@pytest.mark.parametrize(
    "workdir, match",
    [
        ("a_file", r"--workdir \S+a_file is a file, not a folder"),
        ("a_file/run", r"--workdir \S+a_file/run is not writable \(Not a directory\)"),
        ("/sys/research_run", r"--workdir /sys/research_run is not writable"),
        ("/sys/kernel", r"--workdir /sys/kernel is not writable"),
    ],
)
def test_an_unusable_workdir_is_refused_before_any_data_or_compilation(
    data_dir, tmp_path, no_data_built, workdir, match
):
    (tmp_path / "a_file").write_text("not a folder")
    refuse(tiny_config(data_dir), str(tmp_path / workdir), match)
    assert (tmp_path / "a_file").read_text() == "not a folder"


@pytest.mark.parametrize(
    "attention, option, value",
    [("local", "window", 0), ("performer", "num_features", 0), ("t5", "t5_max_distance", 4)],
)
def test_a_bad_option_is_refused_before_the_data_is_generated(tmp_path, attention, option, value):
    config = tiny_config(str(tmp_path / "data"))
    config.model.attention = attention
    config.model.attention_options[attention][option] = value
    refuse(config, str(tmp_path / "run"), rf"attention_options\.{attention}\.{option}={value}")
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


BUILD = """
import sys
from configs import listops
from research import tasks
options = listops.get_config("size=tiny").task_options
options.update(num_train=300, num_val=32, num_test=32, seed=7)
builder = tasks.prepare_builder(tasks.get_task("listops"), options, sys.argv[1])
print(len(builder.as_data_source(split="train")))
"""


def test_processes_that_need_the_same_dataset_at_once_build_it_once(tmp_path):
    data = tmp_path / "data"
    options = listops.get_config("size=tiny").task_options
    options.update(num_train=300, num_val=32, num_test=32, seed=7)
    task = tasks.get_task("listops")
    folder = task.builder_class(config=task.builder_config(options), data_dir=str(data)).data_dir
    logs = [tmp_path / f"build{i}.log" for i in range(2)]
    with BuildLock(folder):  # holds both back until both are waiting, so they surely overlap
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", BUILD, str(data)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=open(log, "w"),  # noqa: SIM115 (closed with the process)
                text=True,
            )
            for log in logs
        ]
        deadline = time.monotonic() + 120
        while not all(log.exists() and "waiting for" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            time.sleep(0.1)
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [
        log.read_text() for log in logs
    ]
    assert [output.strip() for output in outputs] == ["300", "300"]
    generated = [log.read_text().count("generating the listops data") for log in logs]
    assert sorted(generated) == [0, 1]
