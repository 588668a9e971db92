"""Byte-level IMDb sentiment (LRA's Text task), mirroring LRA's released config.

Run it on your copy of the IMDb release (aclImdb_v1.tar.gz or the extracted aclImdb/ folder):

  ./launch.sh train --config configs/text.py --workdir runs/text \
      --config.task_options.source=~/data/aclImdb_v1.tar.gz
  ./launch.sh train --config configs/text.py:length=4000 --workdir runs/text4k \
      --config.task_options.source=~/data/aclImdb_v1.tar.gz
  ./launch.sh train --config configs/text.py:size=tiny --workdir runs/text_tiny \
      --config.task_options.source=~/data/aclImdb

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
length=<bytes kept per review> (LRA: 1000; the paper's 4000 is the other common choice),
pretrain=none|causal|masked (self-pretraining on the task's own inputs first, as Amos et al.
2024 ran it: configs/base.py SELF_PRETRAINING; none trains from scratch, LRA's protocol).
"""

import ml_collections

from configs import base
from research.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, length="1000", pretrain="none")
    if not args["length"].isdigit() or int(args["length"]) < 1:
        raise UserError(f"config argument length={args['length']!r} must be a positive integer")
    config = base.task_config("text", args["attention"])
    config.truncate = True  # LRA keeps the first `length` bytes of each review
    # LRA: emb 256, 4 heads, 4 layers, qkv 256, mlp 1024, CLS pooling, fixed sinusoidal
    # positions, batch 32, 20k steps, rsqrt schedule with 8k warmup steps, weight decay 0.1.
    config.model.update(
        max_len=int(args["length"]),
        emb_dim=256,
        num_heads=4,
        qkv_dim=256,
        mlp_dim=1_024,
        num_layers=4,
        pool="cls",
        positional="sinusoidal",
    )
    config.batch_size = 32
    config.num_train_steps = 20_000
    base.lra_rsqrt(config.optimizer, warmup_steps=8_000)  # peak 5.59e-4
    config.optimizer.weight_decay = 0.1
    base.lra_model(config, "text")  # LRA's init and masks; evaluation every 100 steps
    if args["size"] == "tiny":  # keeps LRA's sinusoidal positions
        base.shrink_lra_to_tiny(config, max_len=min(config.model.max_len, 256))
        base.lra_rsqrt(config.optimizer, warmup_steps=100)  # peak 5e-3
    base.self_pretraining(config, "text", args["pretrain"], tiny=args["size"] == "tiny")
    return config
