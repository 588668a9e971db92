"""Faults a user meets, on the real command line: SIGTERM / SIGINT, SIGKILL in the middle of a
checkpoint save, a non-finite loss, and the compilation cache that makes restarts cheap."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from research.training import checkpoint
from tests.training.test_checkpoint import assert_trees_equal, checkpoint_steps, saved_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


def cli(data_dir, workdir, *overrides) -> list[str]:
    return [
        sys.executable, "-m", "research.cli.main",
        "--config", "configs/listops.py:size=tiny",
        f"--config.data_dir={data_dir}",
        "--config.task_options.num_train=400",
        "--config.task_options.num_val=64",
        "--config.task_options.num_test=64",
        "--config.log_every_steps=5",
        "--config.eval_every_steps=0",
        f"--config.compilation_cache_dir={os.path.join(str(workdir), os.pardir, 'cache')}",
        "--workdir", str(workdir),
        *overrides,
    ]  # fmt: skip


def run(command, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start(command) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(predicate, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_stop_signal_requests_a_stop_at_the_next_step():
    """SIGTERM, SIGINT and SIGHUP each set the stop request (in this process; the end-to-end
    test below runs two of them through a real training process); the handlers are restored."""
    for signum in checkpoint.PreemptionHandler.SIGNALS:
        before = signal.getsignal(signum)
        with checkpoint.PreemptionHandler() as handler:
            assert not handler.should_stop(0)
            signal.raise_signal(signum)
            assert handler.received == signum and handler.should_stop(1)
        assert signal.getsignal(signum) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_exits_75_and_the_rerun_resumes(data_dir, tmp_path, signum):
    """SIGHUP is what a closed terminal or a dropped ssh connection sends."""
    workdir = tmp_path / "run"
    command = cli(data_dir, workdir, "--config.num_train_steps=100000",
                  "--config.checkpoint_every_steps=0")  # fmt: skip
    process = start(command)
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and '"train"' in metrics.read_text(), what="training")
    if signum == signal.SIGTERM:  # while it trains, a second run in its workdir is refused
        second = run(command)
        assert second.returncode == 2, second.stderr
        assert second.stderr.splitlines() == [
            f"error: --workdir {workdir} is in use by pid {process.pid} on "
            f"{socket.gethostname()} since {second.stderr.split(' since ')[1].split(';')[0]}; "
            "wait for that run to end or stop it (it resumes from its checkpoint), or use "
            "another --workdir"
        ]
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    assert "Traceback" not in stderr
    steps = checkpoint_steps(workdir)
    assert len(steps) == 1 and f"stopped by signal at step {steps[0]}" in stderr
    resumed = run([*command[:-2], "--config.num_train_steps", str(steps[0] + 5)])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from the checkpoint at step {steps[0]}" in resumed.stderr
    assert checkpoint_steps(workdir)[-1] == steps[0] + 5


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_and_resume_is_exact(
    data_dir, tmp_path
):
    steps = "--config.num_train_steps=16"
    every_step = "--config.checkpoint_every_steps=1"
    straight = run(cli(data_dir, tmp_path / "straight", steps, every_step))
    assert straight.returncode == 0, straight.stderr

    workdir = tmp_path / "killed"
    process = start(cli(data_dir, workdir, steps, every_step))
    folder = workdir / "checkpoints"

    def saving_after_first_checkpoint() -> bool:
        names = os.listdir(folder) if folder.exists() else []
        return any(n.isdigit() for n in names) and any("tmp" in n for n in names)

    wait_for(saving_after_first_checkpoint, what="a save in progress")
    process.kill()
    process.communicate(timeout=60)
    partial = [n for n in os.listdir(folder) if "tmp" in n]
    complete = checkpoint_steps(workdir)
    assert partial and complete and complete[-1] < 16
    assert (workdir / ".lock").exists()  # left by the killed run, no longer held: taken over

    resumed = run(cli(data_dir, workdir, steps, every_step))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from the checkpoint at step {complete[-1]}" in resumed.stderr
    assert not [n for n in os.listdir(folder) if "tmp" in n]
    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(workdir))


def test_non_finite_loss_is_one_line_and_exit_1(data_dir, tmp_path):
    result = run(cli(data_dir, tmp_path / "run", "--config.num_train_steps=20",
                     "--config.optimizer.learning_rate=inf"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: the training loss became nan at step 2; no checkpoint had been saved"
    )
    assert "Traceback" not in result.stderr


def test_restart_uses_the_persistent_compilation_cache(data_dir, tmp_path):
    result = run(cli(data_dir, tmp_path / "run", "--config.num_train_steps=5"))
    assert result.returncode == 0, result.stderr
    assert "first step done" in result.stderr
    assert any("train_step" in name for name in os.listdir(tmp_path / "cache"))
