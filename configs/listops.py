"""ListOps with a Transformer, mirroring LRA's released config (lra_benchmarks/listops/configs).

Run it (the data is generated on first use, then reused):

  ./launch.sh train --config configs/listops.py --workdir runs/listops
  ./launch.sh train --config configs/listops.py:size=tiny --workdir runs/listops_tiny
  ./launch.sh train --config configs/listops.py:size=tiny,attention=full \
      --config.model.num_layers=1 --workdir runs/listops_1layer

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
pretrain=none|causal|masked (self-pretraining on the task's own inputs first, as Amos et al.
2024 ran it: configs/base.py SELF_PRETRAINING; none trains from scratch, LRA's protocol).
To train on the LRA release instead of generated data, point
--config.task_options.release_dir at the folder holding basic_{train,val,test}.tsv.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, pretrain="none")
    # LRA's 96k/2k/2k expressions of 500-2000 tokens, depth 10
    config = base.task_config("listops", args["attention"])
    # LRA: length 2000, emb 512, 8 heads, 4 layers, qkv 512, mlp 1024, CLS pooling, fixed
    # sinusoidal positions, batch 32, 5k steps.
    config.model.max_len = 2_000
    config.model.positional = "sinusoidal"
    config.batch_size = 32
    config.num_train_steps = 5_000
    base.lra_rsqrt(config.optimizer, warmup_steps=1_000)  # peak 1.58e-3
    config.optimizer.weight_decay = 0.1
    base.lra_model(config, "listops")  # LRA's init and masks; evaluation every 50 steps
    if args["size"] == "tiny":
        # Short expressions and a two-layer model of width 64: a few minutes on a 2-core CPU.
        # Keeps LRA's sinusoidal positions, which learn here as well as learned ones.
        config.task_options.update(
            num_train=5_000, num_val=500, num_test=500, min_length=10, max_length=64, max_depth=4
        )
        tiny_model = dict(emb_dim=64, num_heads=4, qkv_dim=64, mlp_dim=128, num_layers=2)
        base.shrink_lra_to_tiny(config, num_train_steps=1_000, max_len=64, **tiny_model)
        config.eval_batch_size = 128
        base.lra_rsqrt(config.optimizer, warmup_steps=200)  # peak 3.54e-3
        # 256 random features would cost far more than exact attention over 64 tokens.
        config.model.attention_options.performer.num_features = 32
    base.self_pretraining(config, "listops", args["pretrain"], tiny=args["size"] == "tiny")
    return config
