"""AAN citation pairs (LRA's Retrieval task) with a two-tower model, mirroring LRA's config.

Run it on the LRA release's Retrieval files (the folder holding
new_aan_pairs.{train,eval,test}.tsv):

  ./launch.sh train --config configs/retrieval.py --workdir runs/retrieval \
      --config.task_options.release_dir=~/data/lra_release/tsv_data
  ./launch.sh train --config configs/retrieval.py:size=tiny --workdir runs/retrieval_tiny \
      --config.task_options.release_dir=~/data/lra_release/tsv_data

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
pretrain=none|causal|masked (self-pretraining on the task's own inputs first, as Amos et al.
2024 ran it: configs/base.py SELF_PRETRAINING; none trains from scratch, LRA's protocol).
Both documents pass through one shared encoder (config.model.head = "two_tower"), as in LRA's
dual encoder (its released training script builds a single tower instead). As there, each document
is read at its first token (no CLS vector) and [u, v] goes through LRA's
Dense 512 -> ReLU -> Dense 256 -> ReLU -> 2 head; `--config.model.two_tower_head=interaction`
uses [u, v, u*v, u-v] and one hidden layer instead.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, pretrain="none")
    config = base.task_config("retrieval", args["attention"])
    config.truncate = True  # LRA keeps the first 4,000 bytes of each document
    # LRA: 4000 bytes per document, emb 128, 4 heads, 4 layers, qkv 128, mlp 512, fixed
    # sinusoidal positions, the first token's output pooled (its dual encoder's "CLS" pooling
    # prepends no CLS vector), [u, v] -> Dense 512 -> ReLU -> Dense 256 -> ReLU -> 2, batch 32,
    # 5k steps, rsqrt schedule with 8k warmup (longer than the run), weight decay 0.1.
    config.model.update(
        head="two_tower",
        two_tower_head="lra",
        max_len=4_000,
        emb_dim=128,
        num_heads=4,
        qkv_dim=128,
        mlp_dim=512,
        num_layers=4,
        pool="first",
        positional="sinusoidal",
    )
    config.batch_size = 32
    config.num_train_steps = 5_000
    # Peak 5.59e-4, never reached in 5k steps (the run ends at 3.49e-4), as in LRA.
    base.lra_rsqrt(config.optimizer, warmup_steps=8_000)
    config.optimizer.weight_decay = 0.1
    base.lra_model(config, "retrieval")  # LRA's init and masks; evaluation every 100 steps
    if args["size"] == "tiny":  # keeps LRA's sinusoidal positions, pooling and head
        base.shrink_lra_to_tiny(config, max_len=256)
        base.lra_rsqrt(config.optimizer, warmup_steps=100)  # peak 5e-3
    base.self_pretraining(config, "retrieval", args["pretrain"], tiny=args["size"] == "tiny")
    return config
