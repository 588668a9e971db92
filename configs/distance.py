"""A dependency at a chosen distance (a diagnostic): at every position t >= distance, is the symbol
at t the one at t - distance? It measures a variant's reach: local attention with window w and L
layers sees exactly L * w positions back, so it is perfect up to that distance and at chance (50%)
past it; full attention reaches every distance.

Generated on first use:

  ./launch.sh train --config configs/distance.py:distance=64 --workdir runs/distance64
  ./launch.sh train --config configs/distance.py:distance=64,attention=local \
      --workdir runs/distance64_local
  ./launch.sh train --config configs/distance.py:size=tiny --workdir runs/distance_tiny

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
length=<tokens per example>, distance=<positions between the two symbols>, layers=<encoder
layers>. The model predicts at every position (`model.head = "tagger"`); positions are the fixed
sinusoidal table (docs/tasks.md shows why learned absolute positions stall here).
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, length="", distance="", layers="1")
    # Unset lengths follow the size: 256 and 64 (base), 64 and 16 (tiny).
    tiny = args["size"] == "tiny"
    args["length"] = args["length"] or ("64" if tiny else "256")
    args["distance"] = args["distance"] or ("16" if tiny else "64")
    length, distance = base.positive_arg(args, "length"), base.positive_arg(args, "distance")
    config = base.task_config("distance", args["attention"], length=length, distance=distance)
    layers = base.positive_arg(args, "layers")
    base.diagnostic_setup(config, max_len=length, num_layers=layers)
    config.num_train_steps = 2_000
    if tiny:
        config.task_options.update(num_train=5_000, num_val=500, num_test=500)
        config.num_train_steps = 1_000
        config.eval_every_steps = 250
    return config
