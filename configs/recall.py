"""Multi-query associative recall (MQAR, Zoology): key-value pairs, then every key queried again;
the target at each query is its value. A diagnostic that separates the attention variants.

Generated on first use:

  ./launch.sh train --config configs/recall.py --workdir runs/recall
  ./launch.sh train --config configs/recall.py:attention=linear --workdir runs/recall_linear
  ./launch.sh train --config configs/recall.py:pairs=32 --workdir runs/recall32
  ./launch.sh train --config configs/recall.py:size=tiny --workdir runs/recall_tiny

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
pairs=<key-value pairs per example> (8), length=<tokens per example> (default: the larger of 64 and
4 x pairs, so pairs=4,8,16,32 is a sweep over one argument). The vocabulary is
--config.task_options.num_keys / num_values (at most 64 each), the query placement
--config.task_options.queries (random | adjacent).

The model predicts at every position (`model.head = "tagger"`), scored at the queries only, and is
causal (Zoology's autoregressive form; `--config.model.causal=False` runs too, but stayed at 1/8 in
the runs measured in docs/tasks.md). Token embeddings start at unit scale and positions are the
fixed sinusoidal table: docs/tasks.md shows why learned absolute positions stall.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, length="", pairs="8")
    pairs = base.positive_arg(args, "pairs")
    # Unset, the length grows with the pairs (64, or 4 tokens per pair), so `pairs=` alone sweeps.
    args["length"] = args["length"] or str(max(64, 4 * pairs))
    length = base.positive_arg(args, "length")
    config = base.task_config("recall", args["attention"], num_pairs=pairs, length=length)
    # Windows shorter than most key-query gaps (2 layers x 8 = 16 positions back), so that local
    # variants show what their reach costs instead of covering the whole sequence.
    config.model.attention_options.local.window = 8
    config.model.attention_options.block_local.block_size = 16
    base.diagnostic_setup(config, causal=True, max_len=length)
    config.num_train_steps = 3_000
    if args["size"] == "tiny":
        config.task_options.update(num_train=5_000, num_val=500, num_test=500)
        config.num_train_steps = 1_500
        config.eval_every_steps = 250
    return config
