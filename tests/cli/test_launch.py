"""launch.sh: subcommand errors, and `tpu` (dry run and with a stand-in gcloud) quoting every
user argument so that the workers receive them exactly."""

import os
import shlex
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    arguments = remote_command.split(" --distributed", 1)[1].split(" > ~/research/run.log")[0]
    return shlex.split(arguments)


def test_unknown_subcommand_lists_the_valid_ones():
    result = launch("deploy")
    assert result.returncode == 2
    valid = (
        "demo, train, sweep, report, attention-maps, test, bench, python, tpu, tpu-log, tpu-stop"
    )
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["tpu-log", "--zone", "z"], "error: launch.sh tpu-log needs --name"),
        (["tpu-log", *POD], "error: unknown tpu-log option '--accelerator'"),
        (["tpu-stop", "--name", "pod", "--zone", "z", "--force"], "unknown tpu-stop option"),
    ],
)
def test_tpu_log_and_stop_bad_arguments(args, message):
    result = launch(*args)
    assert result.returncode == 2 and message in result.stderr


def test_tpu_dry_run_prints_the_commands_with_every_argument_quoted():
    result = launch("tpu", *POD, "--project", "my project", "--dry-run", "--", *TRICKY)
    assert result.returncode == 0, result.stderr
    commands = [
        shlex.split(line) for line in result.stdout.splitlines() if line.startswith("gcloud")
    ]
    assert [c[4] for c in commands] == ["describe", "create", "ssh", "scp", "ssh"]
    create = commands[1]
    assert create[create.index("--accelerator-type") + 1] == "v4-32"
    assert create[create.index("--project") + 1] == "my project"
    check = commands[2]  # every worker, before anything is copied or started
    assert "--worker=all" in check
    assert check[check.index("--command") + 1] == (
        "if pgrep -f '[r]esearch[.]main' >/dev/null; then echo \"research-run-on $(hostname)\"; fi"
    )
    ssh = commands[4]
    assert "--worker=all" in ssh
    remote = ssh[ssh.index("--command") + 1]
    # detached from the ssh session, its output in a log on the worker's disk
    assert "RESEARCH_EXTRAS=tpu nohup setsid ./launch.sh train --distributed" in remote
    assert " > ~/research/run.log 2>&1 < /dev/null & echo" in remote.split("--distributed")[1]
    assert "if pgrep -f '[r]esearch[.]main' >/dev/null; then" in remote  # one run at a time
    assert worker_arguments(remote) == TRICKY
    assert not os.path.exists("/tmp/pwned")
    assert "./launch.sh tpu-log --name pod --zone us-central2-b --project my\\ project" in (
        result.stderr
    )
    forced = launch("tpu", *POD, "--force", "--dry-run", "--", *TRICKY)
    assert "pgrep" not in forced.stdout and "nohup\\ setsid" in forced.stdout


def test_the_remote_command_starts_the_run_detached_and_refuses_a_second(tmp_path):
    """The remote command itself, run by bash here with a fake HOME, a stand-in launch.sh that
    records how it was started, and a stand-in pgrep (the real one would see other tests' runs)."""
    home, code, bin_dir = tmp_path / "home", tmp_path / "code", tmp_path / "bin"
    for folder in (home / "research", code, bin_dir):
        folder.mkdir(parents=True)
    record = tmp_path / "started"
    (code / "launch.sh").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$RESEARCH_EXTRAS $(ps -o sid= -p $$) $$ $*" > {record}\n'
        "echo trained\n"
    )
    (code / "launch.sh").chmod(0o755)
    subprocess.run(["tar", "czf", str(home / "research-code.tar.gz"), "-C", str(code), "."])
    (bin_dir / "pgrep").write_text(f"#!/usr/bin/env bash\n[[ -f {tmp_path}/running ]]\n")
    (bin_dir / "pgrep").chmod(0o755)
    dry = launch("tpu", *POD, "--dry-run", "--", "--workdir", "gs://b/r")
    ssh = shlex.split([line for line in dry.stdout.splitlines() if " ssh " in line][-1])
    remote = ssh[ssh.index("--command") + 1]
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")

    first = subprocess.run(["bash", "-c", remote], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "started on" in first.stdout, first.stderr
    for _ in range(100):
        if record.exists() and (home / "research" / "run.log").read_text():
            break
        time.sleep(0.05)
    extras, session, pid, *arguments = record.read_text().split()
    assert extras == "tpu" and session == pid  # its own session: no SIGHUP from the ssh one
    assert arguments == ["train", "--distributed", "--workdir", "gs://b/r"]
    assert (home / "research" / "run.log").read_text() == "trained\n"

    (tmp_path / "running").touch()
    second = subprocess.run(["bash", "-c", remote], env=env, capture_output=True, text=True)
    assert second.returncode == 2 and "error: a run is already running on" in second.stderr


def test_tpu_log_and_stop_dry_runs():
    log = launch("tpu-log", "--name", "pod", "--zone", "z", "--worker", "3", "--dry-run")
    assert shlex.split(log.stdout) == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--worker=3", "--zone", "z",
        "--command", "tail -n +1 -F ~/research/run.log",
    ]  # fmt: skip
    stop = launch("tpu-stop", "--name", "pod", "--zone", "z", "--dry-run")
    words = shlex.split(stop.stdout)
    assert "--worker=all" in words
    assert words[-1].startswith("pkill -TERM -f '[r]esearch[.]main'")


def fake_gcloud(tmp_path, body: str):
    """A stand-in gcloud first on PATH that records each call's arguments and then runs `body`;
    returns the environment to run launch.sh in and a function listing the calls so far."""
    log = tmp_path / "calls"
    log.mkdir()
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\0" "$@" > {log}/$(ls {log} | wc -l)\n'  # one file per call, NUL-separated
        + body
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", TMPDIR=str(tmp_path))

    def calls() -> list[list[str]]:
        names = sorted(os.listdir(log), key=int)
        return [(log / name).read_text().split("\0")[:-1] for name in names]

    return env, calls


def test_tpu_runs_create_copy_and_train_through_gcloud(tmp_path):
    env, gcloud_calls = fake_gcloud(
        tmp_path,
        '[[ "$4" == describe ]] && exit 1\n'  # the slice does not exist yet
        "exit 0\n",
    )
    result = launch("tpu", *POD, "--", *TRICKY, env=env)
    assert result.returncode == 0, result.stderr
    calls = gcloud_calls()
    assert [call[3] for call in calls] == ["describe", "create", "ssh", "scp", "ssh"]
    assert (tmp_path / "research-code.tar.gz").stat().st_size > 0
    assert worker_arguments(calls[4][calls[4].index("--command") + 1]) == TRICKY
    assert "./launch.sh tpu-log --name pod" in result.stderr


def test_tpu_refuses_before_copying_when_any_worker_has_a_run(tmp_path):
    """One busy worker of a slice stops the start on all of them: starting on the others would
    leave processes waiting for ever for the ones that refused."""
    env, gcloud_calls = fake_gcloud(
        tmp_path,
        'if [[ "$4" == ssh && "$*" == *research-run-on* ]]; then\n'  # the check, on 4 workers
        '  echo "Using ssh batch size of 4." >&2\n'
        "  echo research-run-on t1v-n-w-2; echo research-run-on t1v-n-w-3\n"
        "fi\n",
    )
    result = launch("tpu", *POD, "--", *TRICKY, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: a run is already running on t1v-n-w-2 t1v-n-w-3; stop it with launch.sh tpu-stop,"
        " or pass --force"
    )
    calls = gcloud_calls()
    assert [call[3] for call in calls] == ["describe", "ssh"]  # nothing copied, nothing started

    forced = launch("tpu", *POD, "--force", "--", *TRICKY, env=env)
    assert forced.returncode == 0, forced.stderr
    calls = gcloud_calls()
    assert [call[3] for call in calls[2:]] == ["describe", "scp", "ssh"]


def test_the_check_command_reports_a_worker_with_a_run(tmp_path):
    dry = launch("tpu", *POD, "--dry-run", "--", "--workdir", "gs://b/r")
    ssh = shlex.split([line for line in dry.stdout.splitlines() if " ssh " in line][0])
    check = ssh[ssh.index("--command") + 1]
    (tmp_path / "pgrep").write_text(f"#!/usr/bin/env bash\n[[ -f {tmp_path}/running ]]\n")
    (tmp_path / "pgrep").chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    idle = subprocess.run(["bash", "-c", check], env=env, capture_output=True, text=True)
    assert idle.returncode == 0 and idle.stdout == ""
    (tmp_path / "running").touch()
    busy = subprocess.run(["bash", "-c", check], env=env, capture_output=True, text=True)
    assert busy.returncode == 0 and busy.stdout.startswith("research-run-on ")


def test_every_package_the_code_imports_is_declared_in_pyproject():
    """A module imported by research/ or configs/ must come from a declared distribution (or the
    standard library): an undeclared one works here by accident and fails on a clean install."""
    import ast
    import importlib.metadata
    import re
    import sys
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        project = tomllib.load(file)["project"]
    extras = project["optional-dependencies"]
    requirements = project["dependencies"] + extras["bench"] + extras["tpu"]
    declared = {re.split(r"[\[=<>;]", r)[0].strip().lower() for r in requirements}
    providers = importlib.metadata.packages_distributions()
    # Imported only on gs:// workdirs, from the tpu extra, which this machine need not have.
    providers.setdefault("google", []).append("google-cloud-storage")
    missing = set()
    for folder in ("research", "configs"):
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in (f for f in files if f.endswith(".py")):
                with open(os.path.join(root, name)) as file:
                    tree = ast.parse(file.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module]
                    else:
                        continue
                    for module in (m.split(".")[0] for m in modules):
                        if module in sys.stdlib_module_names or module in ("research", "configs"):
                            continue
                        names = {d.lower().replace("_", "-") for d in providers.get(module, [])}
                        if not names & {d.replace("_", "-") for d in declared}:
                            missing.add(f"{module} ({', '.join(sorted(names)) or 'not installed'})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
