"""A dependency at a chosen distance (a diagnostic): are the symbols at 0 and `distance` equal?

Generated on first use. With CLS pooling and one layer, a local window of w positions sees both
symbols only if the distance fits in it, so it stays at chance (50%) beyond; full attention
does not:

  ./launch.sh train --config configs/distance.py:distance=64 --workdir runs/distance64
  ./launch.sh train --config configs/distance.py:distance=64,attention=local \
      --workdir runs/distance64_local
  ./launch.sh train --config configs/distance.py:size=tiny --workdir runs/distance_tiny

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
length=<tokens per example>, distance=<positions between the two symbols>.
"""

import ml_collections

from configs import base
from research.errors import check_choice

SIZES = ("base", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.parse_args(arg, {"size": "base", "attention": "full", "length": "", "distance": ""})
    check_choice("config argument size", args["size"], SIZES)
    # Unset lengths follow the size: 256 and 64 (base), 64 and 16 (tiny).
    tiny = args["size"] == "tiny"
    args["length"] = args["length"] or ("64" if tiny else "256")
    args["distance"] = args["distance"] or ("16" if tiny else "64")
    length, distance = base.positive_arg(args, "length"), base.positive_arg(args, "distance")
    config = base.get_config()
    config.task = "distance"
    config.task_options = ml_collections.ConfigDict(
        dict(
            length=length,
            distance=distance,
            num_symbols=4,
            num_train=20_000,
            num_val=1_000,
            num_test=1_000,
            seed=0,
        )
    )
    config.model.attention = args["attention"]
    # One layer, so the receptive field is the attention's own reach.
    config.model.update(
        max_len=length,
        emb_dim=64,
        num_heads=4,
        qkv_dim=64,
        mlp_dim=128,
        num_layers=1,
        pool="cls",
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        token_init_std=1.0,
        position_init_std=1.0,
    )
    config.batch_size = 64
    config.eval_batch_size = 250
    config.num_train_steps = 3_000
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.optimizer.schedule = "cosine"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 100
    config.optimizer.weight_decay = 0.0
    if args["size"] == "tiny":
        config.task_options.update(num_train=5_000, num_val=500, num_test=500)
        config.num_train_steps = 1_000
        config.eval_every_steps = 250
    return config
