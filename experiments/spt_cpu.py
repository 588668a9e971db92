"""Self-pretraining against training from scratch on a 2-core CPU (Amos et al. 2024, at toy size):

  ./launch.sh sweep experiments/spt_cpu.py --parallel 2
  ./launch.sh report runs/spt_cpu

The tiny configs of the two generated LRA tasks, ListOps (5,000 expressions of up to 64 tokens, a
2-layer width-64 model, 1,000 steps) and Pathfinder-32 (2,000 images of 1,024 pixels, a 1-layer
width-32 model, 500 steps), for full attention and two cheaper variants (a sliding window and
elu+1 linear attention), from scratch and after masked self-pretraining (`pretrain=masked`: as
many pretraining steps as the task trains, the paper's masking rate, 10% and 50%, and pretraining
learning rate; configs/base.py self_pretraining), 3 seeds each.

Run end to end on 2026-12-06: 36 runs in 1 h 17 min with `--parallel 2` on the 2-core machine
(partly shared with test runs); the report is experiments/results/spt/report.md and docs/tasks.md
reads it against the paper (no effect at this size: Pathfinder-32 stays at chance under both
protocols, ListOps at about 37% under both).
"""

CONFIG = "configs/listops.py"
VARIANTS = ["full", "local", "linear"]
PROTOCOLS = ["none", "masked"]  # "none" first: the baseline of the differences


def get_hyper(h):
    return h.product(
        [
            h.sweep("config", ["configs/listops.py:size=tiny", "configs/pathfinder.py:size=tiny"]),
            h.sweep("config.model.attention", VARIANTS),
            h.sweep("arg.pretrain", PROTOCOLS),
            h.sweep("config.seed", [0, 1, 2]),
        ]
    )
