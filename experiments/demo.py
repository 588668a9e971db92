"""The first comparison (`./launch.sh demo`, about 10 minutes on a 2-core CPU): multi-query
associative recall (MQAR, configs/recall.py at size=tiny) with 4 and 8 key-value pairs, for one
variant of each family: full softmax, relative position (RoPE), local (a sliding window of 8 over
2 layers reaches 16 positions back; most key-query gaps are longer) and linear (elu+1). Performer
is left out here only because its causal form trains about 4 times slower on a CPU;
experiments/recall_pairs.py has it.

What the literature says it should show (Zoology, Arora et al. 2023): full and relative-position
attention solve MQAR; local attention stays near chance where the key is out of its reach; linear
attention's fixed-size state falls behind full attention as the pairs grow.

One learning rate for every variant: 3e-3, above configs/recall.py's 1e-3, so that 700 steps
suffice for full attention (it jumps from 1/pairs to ~100% between steps 400 and 600 here);
the steps are the demo's time budget, not a convergence point: linear attention escapes its
plateau later (about step 700 at 4 pairs, past 2,500 at 8 with the slower rate; docs/tasks.md).
"""

CONFIG = "configs/recall.py:size=tiny"


def get_hyper(h):
    return h.product(
        [
            # one variant per family (the docstring says why Performer is not one)
            h.sweep("config.model.attention", ["full", "rope", "local", "linear"]),
            h.sweep("arg.pairs", [4, 8]),
            h.fixed("config.num_train_steps", 700),
            h.fixed("config.optimizer.learning_rate", 3e-3),
            h.fixed("config.eval_every_steps", 100),
        ]
    )
