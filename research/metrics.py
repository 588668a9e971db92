"""Where metrics go: JSON lines (`metrics.jsonl`) and TensorBoard event files (`tensorboard/`).

TensorBoard files are written with tensorboardX, so neither writing nor reading them needs
TensorFlow. Only the process that owns logging (process 0 on a pod) should create a writer.
"""

import json
import os
import time

from tensorboardX import SummaryWriter


class MetricWriter:
    """Appends `{"step", "split", <name>: value, "time"}` records and mirrors them as scalars."""

    def __init__(self, workdir: str):
        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tensorboard = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        record["time"] = time.time()
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        self._jsonl.close()
        self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl, oldest first."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
