"""The first comparison (`./launch.sh demo`, 8 to 17 minutes on a 2-core CPU): multi-query
associative recall (MQAR, Zoology's generator at configs/recall.py's size=tiny: a vocabulary of
128, queries placed by Zoology's power law) with 4 and 8 key-value pairs, for one variant of each
family: full softmax, relative position (RoPE), local (a sliding window of 8: over 2 layers it
reaches 16 positions back) and linear (elu+1). Performer is left out here only because its causal
form trains about 3 times slower on a CPU (at this size, 2026-12-07: 5 steps/s against linear's 15
and full attention's 13).

What it is: an **equal-steps comparison**. Every variant trains 700 steps at one learning rate
(3e-3, chosen so that full attention solves both settings in that budget), and the table says
which variants have learned MQAR by then. It is not Zoology's result, which is about capacity
(accuracy at a fixed width after the best of 4 learning rates and 64 epochs; experiments/zoology.py
runs that protocol): a variant behind here may only be slower to learn. docs/tasks.md shows, for
example, elu+1 linear attention solving 8 pairs when given 4,000 steps.
"""

CONFIG = "configs/recall.py:size=tiny"


def get_hyper(h):
    return h.product(
        [
            # one variant per family (the docstring says why Performer is not one), equal steps
            h.sweep("config.model.attention", ["full", "rope", "local", "linear"]),
            h.sweep("arg.pairs", [4, 8]),
            h.fixed("config.num_train_steps", 700),
            h.fixed("config.optimizer.learning_rate", 3e-3),
            h.fixed("config.eval_every_steps", 100),
        ]
    )
