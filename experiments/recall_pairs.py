"""MQAR accuracy against the number of key-value pairs, per variant, at one fixed width (64):
Figure 2's protocol (configs/recall.py at size=base) with the sequence growing with the pairs
(16 tokens per pair: 64 to 512), every point the best of Figure 2's 4 learning rates. Attention
that can look anything up (full, the relative-position variants) should stay near 100% as the
pairs grow; a fixed-size state (linear, Performer) and a bounded reach (local, block-local) should
fall away. Meant for an accelerator (128 runs of 64 epochs).

  ./launch.sh sweep experiments/recall_pairs.py --dry-run
  ./launch.sh sweep experiments/recall_pairs.py --only attention=linear
"""

from configs.recall import ZOOLOGY_LEARNING_RATES
from experiments.zoology import VARIANTS

CONFIG = "configs/recall.py:width=64"
BEST_OVER = "config.optimizer.learning_rate"


def get_hyper(h):
    return h.product(
        [
            h.sweep("config.model.attention", VARIANTS),
            h.sweep("arg.pairs", [4, 8, 16, 32]),
            h.sweep("config.optimizer.learning_rate", list(ZOOLOGY_LEARNING_RATES)),
        ]
    )
