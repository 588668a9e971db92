"""launch.sh: subcommand errors, and `tpu` (dry run and with a stand-in gcloud) quoting every
user argument so that the workers receive them exactly."""

import os
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch.sh")
TRICKY = [
    "--config", "configs/listops.py:size=tiny,attention=full",
    "--workdir", "gs://bucket/runs/a b",
    "--config.model.attention=it's $(touch /tmp/pwned) `id` \"q\" ; rm -rf ~",
]  # fmt: skip
POD = ["--name", "pod", "--zone", "us-central2-b", "--accelerator", "v4-32"]


def launch(*args, env=None):
    return subprocess.run(
        ["bash", LAUNCH, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )


def worker_arguments(remote_command: str) -> list[str]:
    """What the workers' shell passes to `launch.sh train` after parsing the remote command."""
    words = shlex.split(remote_command.split("; ")[-1])
    return words[words.index("--distributed") + 1 :]


def test_unknown_subcommand_lists_the_valid_ones():
    result = launch("deploy")
    assert result.returncode == 2
    valid = "demo, train, sweep, report, attention-maps, test, bench, python, tpu"
    assert f"error: unknown command 'deploy'; valid: {valid}" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "pod"], "error: launch.sh tpu needs --zone"),
        ([*POD, "--colour", "red"], "error: unknown tpu option '--colour'"),
        ([*POD, "--", "--config", "configs/listops.py"], "including --workdir gs://BUCKET/PATH"),
    ],
)
def test_tpu_bad_arguments(args, message):
    result = launch("tpu", *args)
    assert result.returncode == 2 and message in result.stderr


def test_tpu_dry_run_prints_the_commands_with_every_argument_quoted():
    result = launch("tpu", *POD, "--project", "my project", "--dry-run", "--", *TRICKY)
    assert result.returncode == 0, result.stderr
    commands = [
        shlex.split(line) for line in result.stdout.splitlines() if line.startswith("gcloud")
    ]
    assert [c[4] for c in commands] == ["describe", "create", "scp", "ssh"]
    create = commands[1]
    assert create[create.index("--accelerator-type") + 1] == "v4-32"
    assert create[create.index("--project") + 1] == "my project"
    ssh = commands[3]
    assert "--worker=all" in ssh
    remote = ssh[ssh.index("--command") + 1]
    assert "RESEARCH_EXTRAS=tpu ./launch.sh train --distributed" in remote
    assert worker_arguments(remote) == TRICKY
    assert not os.path.exists("/tmp/pwned")


def test_tpu_runs_create_copy_and_train_through_gcloud(tmp_path):
    log = tmp_path / "calls"
    log.mkdir()
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\0" "$@" > {log}/$(ls {log} | wc -l)\n'  # one file per call, NUL-separated
        '[[ "$4" == describe ]] && exit 1\n'  # the slice does not exist yet
        "exit 0\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", TMPDIR=str(tmp_path))
    result = launch("tpu", *POD, "--", *TRICKY, env=env)
    assert result.returncode == 0, result.stderr
    calls = [(log / name).read_text().split("\0")[:-1] for name in sorted(os.listdir(log), key=int)]
    assert [call[3] for call in calls] == ["describe", "create", "scp", "ssh"]
    assert (tmp_path / "research-code.tar.gz").stat().st_size > 0
    assert worker_arguments(calls[3][calls[3].index("--command") + 1]) == TRICKY
