"""Zoology's Figure 2 (Arora et al. 2023), the subset a 2-core CPU runs in under 2 hours:

  ./launch.sh sweep experiments/zoology_cpu.py --parallel 2
  ./launch.sh report runs/zoology_cpu --plots

Figure 2's data and model (configs/recall.py at size=base: vocabulary 8,192, power-law queries,
filler 0, 100,000 training and 3,000 test sequences; 2 layers, 1 head, no MLP, attention dropout
0.1, learned positions, Zoology's init and tied output layer), on the two shorter panels, (64, 4)
and (128, 8), at widths 64 and 128, every point the best of Figure 2's 4 learning rates
(`BEST_OVER`), for the two mechanisms Zoology contrasts: attention that can look anything up
(full) and a fixed-size state (linear attention). experiments/zoology.py is the whole grid (8
variants, 3 panels, 4 widths) for an accelerator.

What differs from Figure 2, for the budget: batch 128 instead of 512 (more updates per sequence
seen: full attention at (64, 4) passes 94% within 600 steps of 128, while the same 76,800
sequences are 150 steps of 512) and 600 steps at (64, 4), 800 at (128, 8) (0.8 and 1.0 epochs,
the cosine schedule over them) instead of 64 epochs with early stopping at 99%: enough that full
attention converges at the best learning rate (measured 2026-12-06 at width 64: 95.4% and 98.6%),
not enough to say what a slower learner would reach. A variant that stays low here is one that
did not learn within about an epoch, which is a budget statement, not Figure 2's capacity one.
docs/tasks.md reads the committed report (experiments/results/zoology/) against Zoology.
"""

from configs.recall import ZOOLOGY_LEARNING_RATES

CONFIG = "configs/recall.py"
BEST_OVER = "config.optimizer.learning_rate"
VARIANTS = ["full", "linear"]
WIDTHS = [64, 128]
# Figure 2's two shorter panels (length 16 x pairs) with the steps each trains for.
PAIRS = [4, 8]
STEPS = [600, 800]


def get_hyper(h):
    return h.product(
        [
            h.sweep("config.model.attention", VARIANTS),
            h.zip([h.sweep("arg.pairs", PAIRS), h.sweep("config.num_train_steps", STEPS)]),
            h.sweep("arg.width", WIDTHS),
            h.sweep("config.optimizer.learning_rate", list(ZOOLOGY_LEARNING_RATES)),
            h.fixed("config.batch_size", 128),
            h.fixed("config.eval_every_steps", 200),
        ]
    )
