"""A sweep's cell: the one record of a training run of the grid, the files its folder holds, and
the one rule that reads its status from them.

A cell folder `<sweep workdir>/<cell name>/` holds `cell.json` (the record below and the command
that ran it), `log.txt` (the output of every attempt), `failed.json` (returncode, error) when it
failed, and the run's own files: config.json when training started, results.json when it finished.
The grid (research/sweeps/grid.py) makes cells, the runner and executors run them, the report reads
their folders; all of them read status through `status`.
"""

import dataclasses
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from research.errors import EXIT_PREEMPTED

FINISHED, FAILED, RUNNING, NOT_STARTED = "finished", "failed", "running", "not started"
INTERRUPTED = "interrupted"
# Exit statuses of an attempt stopped by a signal: it saved a checkpoint; running it again resumes.
INTERRUPTED_CODES = (EXIT_PREEMPTED, -signal.SIGTERM, -signal.SIGINT)


@dataclasses.dataclass
class Cell:
    """One training run of a sweep. `to_dict` is what sweep.json and cell.json record of it; the
    record is plain data, so submitit can pickle it into a job."""

    name: str
    workdir: str  # its folder, <sweep workdir>/<name>
    spec: str  # the config file spec, `arg.*` and `config` keys applied
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # --config.<field>=value
    index: int = 0  # its position in the full grid (for --shard)
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # its grid keys' values
    cwd: str | None = None  # where its command runs (None: the current directory)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # extra environment variables

    def to_dict(self) -> dict[str, Any]:
        """The cell as sweep.json and cell.json describe it (JSON types, for comparisons)."""
        return json.loads(json.dumps({"name": self.name, "config": self.spec,
                                      "overrides": self.overrides}))  # fmt: skip

    @classmethod
    def from_dict(cls, record: dict[str, Any], sweep_dir: str | Path) -> "Cell":
        """The cell a sweep.json or cell.json entry describes, in the sweep folder `sweep_dir`."""
        name = str(record["name"])
        return cls(name, str(Path(sweep_dir, name)), str(record.get("config") or ""),
                   dict(record.get("overrides") or {}))  # fmt: skip

    def config_flags(self) -> list[str]:
        """`--config SPEC` and one `--config.<field>=VALUE` per override."""
        overrides = [f"--{key}={override_text(value)}" for key, value in self.overrides.items()]
        return ["--config", self.spec, *overrides]

    def flags(self) -> list[str]:
        """research.cli.main's arguments for this cell."""
        return [*self.config_flags(), "--workdir", self.workdir]

    def launch_command(self) -> list[str]:
        """The pasteable command that runs this cell by hand, from the repository root."""
        return ["./launch.sh", "train", *self.flags()]

    def launch_line(self) -> str:
        """`launch_command` quoted as one line, as cell.json and log.txt show it."""
        return shlex.join(self.launch_command())

    def train_command(self) -> list[str]:
        """The argv the executors run: research.cli.main in this interpreter."""
        return [sys.executable, "-m", "research.cli.main", *self.flags()]


def override_text(value: Any) -> str:
    """A value as config_flags parses it from `--config.field=TEXT`."""
    return value if isinstance(value, str) else str(value)


# ----------------------------------------------------------------------------- its folder


def read_json(path: Path) -> dict | None:
    """The file's JSON object, or None when it is missing or half written (a run being killed)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def status(folder: str | Path, returncode: int | None = None) -> str:
    """A cell's status, from its folder and, right after an attempt, that attempt's exit status.

    interrupted: the attempt was stopped by a signal (`INTERRUPTED_CODES`). finished: results.json
    can be read (it wins over failed.json: a failed cell that a later attempt finished), and the
    attempt, if one just ended, exited 0. failed: the attempt exited otherwise, or failed.json
    records an earlier failure. running: config.json exists (the run started; a killed run looks
    the same). Else not started.
    """
    folder = Path(folder)
    if returncode in INTERRUPTED_CODES:
        return INTERRUPTED
    finished = read_json(folder / "results.json") is not None
    if returncode is not None:
        return FINISHED if returncode == 0 and finished else FAILED
    if finished:
        return FINISHED
    if read_json(folder / "failed.json") is not None:
        return FAILED
    return RUNNING if read_json(folder / "config.json") is not None else NOT_STARTED


def is_done(cell: Cell) -> bool:
    """A finished cell whose cell.json describes the same run (a changed cell runs again)."""
    if status(cell.workdir) != FINISHED:
        return False
    saved = read_json(Path(cell.workdir, "cell.json")) or {}
    record = cell.to_dict()
    return saved.get("config") == record["config"] and saved.get("overrides") == record["overrides"]


def start_folder(cell: Cell) -> Path:
    """Creates the cell's folder, records what runs there, and forgets an earlier failure."""
    folder = Path(cell.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failed.json").unlink(missing_ok=True)
    write_json(folder / "cell.json", {**cell.to_dict(), "command": cell.launch_line()})
    return folder


def record_failure(cell: Cell, returncode: int | None, error: str) -> None:
    """Writes the cell's failed.json (and cell.json), where the report looks: the one place every
    failure is recorded, whether the cell failed before launch (bad config, data), in its run, or
    with its job (a submitit job that died)."""
    folder = start_folder(cell)
    write_json(folder / "failed.json", {"returncode": returncode, "error": error})
