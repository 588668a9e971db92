"""MQAR accuracy against the number of key-value pairs, per variant, at a fixed width (emb 64,
2 layers): Zoology's figure (Arora et al. 2023). Attention that can look anything up (full, the
relative-position variants) stays near 100% as pairs grow; a fixed-size state (linear, Performer)
and a bounded reach (local, block-local) fall away.

  ./launch.sh sweep experiments/recall_pairs.py
  ./launch.sh sweep experiments/recall_pairs.py --only attention=linear --parallel 2

The sequence length follows the pairs (64 tokens up to 16 pairs, 128 at 32; configs/recall.py).
"""

CONFIG = "configs/recall.py"
# A chosen subset, not the registry: in the order of the argument above, the variants that can look
# anything up (full and the relative-position ones), then those with a bounded reach or a
# fixed-size state. Shaw is not in it.
VARIANTS = ["full", "rope", "alibi", "t5", "local", "block_local", "linear", "performer"]


def get_hyper(h):
    return h.product(
        [
            h.sweep("config.model.attention", VARIANTS),
            h.sweep("arg.pairs", [4, 8, 16, 32]),
            h.sweep("config.seed", [0, 1]),
        ]
    )
