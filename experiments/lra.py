"""The Long Range Arena (Tay et al. 2021, Table 1): six tasks x every attention variant x 3 seeds,
each at LRA's released config (configs/<task>.py at size=base). Meant for accelerators.

  ./launch.sh sweep experiments/lra.py --dry-run            # every cell and its command
  ./launch.sh sweep experiments/lra.py --only config=listops  # one task on this machine
  ./launch.sh sweep experiments/lra.py --executor slurm --slurm gpus_per_node=1
  ./launch.sh sweep experiments/lra.py --shard 0/4          # machine 0 of 4 (then 1/4, ...)

Text, Image and Retrieval read your copies of their datasets from $LRA_DATA (default ~/data):
aclImdb_v1.tar.gz, cifar-10-python.tar.gz and lra_release/tsv_data/ (new_aan_pairs.*.tsv).
ListOps, Pathfinder and Path-X are generated. The report puts LRA Table 1's published rows
(Transformer, Local Attention, Linear Trans., Performer) beside our corresponding variants, with
one caveat line per difference in data or model, and Table 1's "Avg" column only for rows that
have every task but Path-X.
"""

import os

from research.attention import ATTENTION

CONFIG = "configs/listops.py"
DATA = os.environ.get("LRA_DATA", "~/data")
VARIANTS = list(ATTENTION)  # every variant of the registry
# Path-X at 16K tokens needs a slice rather than one accelerator: --dry-run prints the
# `launch.sh tpu` command of every cell too.
TPU = {"accelerator": "v4-8"}


def get_hyper(h):
    return h.product(
        [
            tasks(h),
            h.sweep("config.model.attention", VARIANTS),
            h.sweep("config.seed", [0, 1, 2]),
        ]
    )


def tasks(h):
    """LRA's six tasks, each with the path of its data where it reads one."""
    return h.chainit(
        [
            h.fixed("config", "configs/listops.py"),
            h.zip(
                [
                    h.fixed("config", "configs/text.py"),
                    h.fixed("config.task_options.source", f"{DATA}/aclImdb_v1.tar.gz"),
                ]
            ),
            h.zip(
                [
                    h.fixed("config", "configs/retrieval.py"),
                    h.fixed("config.task_options.release_dir", f"{DATA}/lra_release/tsv_data"),
                ]
            ),
            h.zip(
                [
                    h.fixed("config", "configs/image.py"),
                    h.fixed("config.task_options.source", f"{DATA}/cifar-10-python.tar.gz"),
                ]
            ),
            h.fixed("config", "configs/pathfinder.py"),
            h.fixed("config", "configs/pathfinder.py:resolution=128"),
        ]
    )
