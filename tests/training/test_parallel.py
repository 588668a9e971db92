"""Data parallelism end to end on CPU: 8 simulated devices (jit with NamedSharding, jit with FSDP,
pmap) and two processes joined by jax.distributed all end where one device does, to float
tolerance, with the same global batch; a signal to one process of two stops both at one step."""

import os
import signal
import socket
import subprocess

import jax
import numpy as np
import pytest

from research.training.parallel import fsdp_spec
from tests.training.test_checkpoint import checkpoint_steps, saved_state
from tests.training.test_faults import ROOT, cli, wait_for

pytestmark = pytest.mark.slow


def run_with_devices(command, devices: int, timeout=300):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return result


def assert_close(a, b):
    """Equal to float tolerance, except softmax attention's key bias: it shifts every logit of a
    query equally, so its true gradient is exactly zero and what it receives is rounding noise,
    which Adam scales up to full-size steps (it differs even between two summation orders)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    leaves = jax.tree_util.tree_leaves_with_path(a)
    for (path, x), y in zip(leaves, jax.tree.leaves(b), strict=True):
        name = jax.tree_util.keystr(path)
        if "['key']['bias']" not in name:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-5, err_msg=name)


@pytest.fixture(scope="module")
def one_device(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_device") / "run"
    run_with_devices(cli(data_dir, workdir, "--config.num_train_steps=10"), 1)
    return saved_state(workdir)


@pytest.mark.parametrize(
    "mode", [["--config.parallelism=jit"], ["--config.fsdp=True"], ["--config.parallelism=pmap"]]
)
def test_eight_devices_match_one_device(data_dir, tmp_path, one_device, mode):
    workdir = tmp_path / "run"
    run_with_devices(cli(data_dir, workdir, "--config.num_train_steps=10", *mode), 8)
    assert_close(saved_state(workdir), one_device)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process(data_dir, tmp_path, one_device):
    workdir, port = tmp_path / "run", free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    processes = [
        subprocess.Popen(
            cli(data_dir, workdir, "--config.num_train_steps=10", "--distributed",
                f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                f"--process_id={index}"),
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index in range(2)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    assert "test accuracy" in outputs[0][0] and "test accuracy" not in outputs[1][0]
    assert sorted(os.listdir(workdir / "checkpoints" / "10" / "data")) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"
    ]  # fmt: skip
    assert_close(saved_state(workdir), one_device)


def test_fsdp_shards_the_largest_divisible_axis():
    assert fsdp_spec((64, 128), 8) == jax.sharding.PartitionSpec(None, "data")
    assert fsdp_spec((6, 5), 8) == jax.sharding.PartitionSpec()
    assert fsdp_spec((), 8) == jax.sharding.PartitionSpec()


def test_a_checkpoint_from_eight_sharded_devices_resumes_on_one(data_dir, tmp_path):
    workdir = tmp_path / "run"
    run_with_devices(cli(data_dir, workdir, "--config.num_train_steps=6", "--config.fsdp=True"), 8)
    result = run_with_devices(cli(data_dir, workdir, "--config.num_train_steps=8"), 1)
    assert "resumed from the checkpoint at step 6" in result.stderr
    assert int(saved_state(workdir)["step"]) == 8


def test_a_signal_to_one_process_of_a_pod_stops_all_at_one_checkpointed_step(data_dir, tmp_path):
    """JAX's preemption sync point spreads process 1's SIGTERM to process 0; both save the same
    step together and exit 75."""
    workdir, port = tmp_path / "run", free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    processes = [
        subprocess.Popen(
            cli(data_dir, workdir, "--config.num_train_steps=100000", "--distributed",
                "--config.checkpoint_every_steps=0", f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={index}"),
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index in range(2)
    ]  # fmt: skip
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and '"train"' in metrics.read_text(), what="training")
    processes[1].send_signal(signal.SIGTERM)
    outputs = [process.communicate(timeout=180) for process in processes]
    assert [process.returncode for process in processes] == [75, 75], outputs
    (step,) = checkpoint_steps(workdir)
    assert f"stopped by signal at step {step}" in outputs[0][1]
    assert sorted(os.listdir(workdir / "checkpoints" / str(step) / "data")) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"
    ]  # fmt: skip
