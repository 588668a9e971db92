"""Where metrics go: JSON lines (`metrics.jsonl`) and TensorBoard event files (`tensorboard/`).

TensorBoard files are written with tensorboardX, so neither writing nor reading them needs
TensorFlow. Only the process that owns logging (process 0 on a pod) should create a writer.
`peak_memory` is the one measurement taken here rather than in the step: the backend's own count.
"""

import json
import resource
import sys
import time

import jax
from tensorboardX import SummaryWriter

from research.training.paths import is_remote, workdir_path


class MetricWriter:
    """Appends `{"step", "split", <name>: value, "time"}` records and mirrors them as scalars.

    Buckets cannot append to a file, so on a remote workdir the JSON lines file is rewritten
    whole at each write (it stays small: one line per logged interval).
    """

    def __init__(self, workdir: str):
        directory = workdir_path(workdir)
        directory.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = directory / "metrics.jsonl"
        self._remote = is_remote(directory)
        self._lines = []
        if self._remote and self.jsonl_path.exists():
            self._lines = self.jsonl_path.read_text().splitlines()
        self._tensorboard = SummaryWriter(logdir=str(directory / "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        record["time"] = time.time()
        line = json.dumps(record)
        if self._remote:
            self._lines.append(line)
            self.jsonl_path.write_text("\n".join(self._lines) + "\n")
        else:
            with self.jsonl_path.open("a") as file:
                file.write(line + "\n")
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl, oldest first."""
    text = (workdir_path(workdir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def peak_memory() -> tuple[int, str]:
    """(bytes, source): the peak memory this process has used so far, for comparing variants.

    Accelerators report their own peak (`peak_bytes_in_use`, the max over local devices: source
    "device"); the CPU backend reports no device stats, so there the process's peak resident set
    size stands in (source "host_rss"; it includes the Python process and the data pipeline).
    """
    stats = [device.memory_stats() or {} for device in jax.local_devices()]
    peaks = [s["peak_bytes_in_use"] for s in stats if "peak_bytes_in_use" in s]
    if peaks:
        return int(max(peaks)), "device"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "host_rss"  # Linux: KiB
