"""Zoology's Figure 2 (Arora et al. 2023) for our variants: MQAR accuracy against model width, one
panel per (length, pairs), one line per variant, every point the best of 4 learning rates.

  ./launch.sh sweep experiments/zoology.py --dry-run      # 384 runs: an accelerator grid
  ./launch.sh sweep experiments/zoology.py --executor slurm --slurm gpus_per_node=1

Each run is configs/recall.py at size=base: Figure 2's data (vocabulary 8,192, power-law queries,
filler 0, 100,000 training and 3,000 test sequences) and model (2 layers, 1 head, no MLP,
attention dropout 0.1, learned positions), 64 epochs or until validation accuracy reaches 99% (as
Zoology stops). The report takes, per (variant, width, length), the learning rate with the best
validation accuracy and reports its test accuracy (`BEST_OVER`), as Figure 2 reports the best of
logspace(-4, -2, 4).

On a 2-core CPU one step at (64, 4) and width 64 (batch 512) takes 0.35 s (2.8 steps/s, measured
2026-12-05 on an AMD EPYC with AVX-512): one run's 64 epochs are 12,500 steps, about 73 minutes,
so this grid is for accelerators; docs/tasks.md says what a CPU can and cannot show of it.

Zoology's finding: attention solves MQAR at every width; mixers with a fixed-size state need a
width that grows with the sequence length. docs/tasks.md reads our results against it.
"""

from configs.recall import ZOOLOGY_LEARNING_RATES

CONFIG = "configs/recall.py"
BEST_OVER = "config.optimizer.learning_rate"
# Figure 2's panels: (length, pairs) = (64, 4), (128, 8), (256, 16); configs/recall.py sets the
# length to 16 x pairs.
PAIRS = [4, 8, 16]
WIDTHS = [64, 128, 256, 512]
# A chosen subset of the registry: the variants that can look anything up (full and the
# relative-position schemes), then a bounded reach (local, block_local) and a fixed-size state
# (linear, performer). Shaw is left out (its value term adds a T x T x D tensor per layer).
VARIANTS = ["full", "rope", "alibi", "t5", "local", "block_local", "linear", "performer"]


def get_hyper(h):
    return h.product(
        [
            h.sweep("config.model.attention", VARIANTS),
            h.sweep("arg.pairs", PAIRS),
            h.sweep("arg.width", WIDTHS),
            h.sweep("config.optimizer.learning_rate", list(ZOOLOGY_LEARNING_RATES)),
        ]
    )
