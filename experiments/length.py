"""Accuracy, speed and peak memory against sequence length for one task (MQAR with 8 pairs, the
sequence padded with filler to the length): LRA's Figure 3 question, how the variants' cost grows
with length, answered with the accuracy beside it. Full attention's memory grows with length
squared, local, linear and Performer linearly.

  ./launch.sh sweep experiments/length.py                   # an accelerator: every length
  ./launch.sh sweep experiments/length.py --only length=256 # a CPU: the shortest only
"""

CONFIG = "configs/recall.py:pairs=8"


def get_hyper(h):
    return h.product(
        [
            # full attention (memory ~ length squared) against the linear-memory families
            h.sweep("config.model.attention", ["full", "local", "linear", "performer"]),
            h.sweep("arg.length", [256, 512, 1024, 2048, 4096]),
        ]
    )
