"""Self-pretraining against training from scratch (Amos, Berant & Gupta, "Never Train from
Scratch", ICLR 2024): the LRA tasks x every attention variant x {from scratch, causal, masked}, each
at LRA's released config (configs/<task>.py at size=base). Meant for accelerators.

  ./launch.sh sweep experiments/spt.py --dry-run             # every cell and its command
  ./launch.sh sweep experiments/spt.py --only config=listops   # one task
  ./launch.sh report runs/spt

The configs' `pretrain` argument is the one switch: "none" trains from scratch (LRA's protocol);
"causal" or "masked" first pretrains the encoder on the task's own training inputs as the paper did
(configs/base.py SELF_PRETRAINING: its epochs, warmup, masking rate and pretraining learning rate
per task), then trains the task exactly as from scratch. The report puts each variant's protocols
in rows side by side, then the difference in points. docs/tasks.md says where this differs from
the paper (its fine-tuning learning-rate grid, pooling and best-validation pretraining checkpoint)
and which of its numbers to hold ours against. experiments/spt_cpu.py is a 2-core CPU version.
"""

from experiments import lra
from research.attention import ATTENTION

CONFIG = "configs/listops.py"
VARIANTS = list(ATTENTION)
PROTOCOLS = ["none", "causal", "masked"]  # "none" first: the baseline of the differences


def get_hyper(h):
    return h.product(
        [
            lra.tasks(h),
            h.sweep("config.model.attention", VARIANTS),
            h.sweep("arg.pretrain", PROTOCOLS),
            h.sweep("config.seed", [0, 1, 2]),
        ]
    )
