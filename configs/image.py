"""Grayscale CIFAR-10 as 1,024-pixel sequences (LRA's Image task), mirroring LRA's config.

Run it on your copy of CIFAR-10 (cifar-10-python.tar.gz or the extracted cifar-10-batches-py/):

  ./launch.sh train --config configs/image.py --workdir runs/image \
      --config.task_options.source=~/data/cifar-10-python.tar.gz
  ./launch.sh train --config configs/image.py:size=tiny --workdir runs/image_tiny \
      --config.task_options.source=~/data/cifar-10-python.tar.gz

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
pretrain=none|causal|masked (self-pretraining on the task's own inputs first, as Amos et al.
2024 ran it: configs/base.py SELF_PRETRAINING; none trains from scratch, LRA's protocol).
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, pretrain="none")
    config = base.task_config("image", args["attention"])
    # LRA: 1024 pixels, emb 128, 8 heads (1 head reproduces only 36%), 1 layer, qkv 64, mlp 128,
    # CLS pooling, learned positions, black pixels masked as padding (LRA masks every token 0),
    # dropout 0.3, attention dropout 0.2, batch 256, 35k steps, cosine schedule to 5e-4 after 175
    # warmup steps. LRA's image config has no weight decay.
    config.model.update(
        max_len=1_024,
        emb_dim=128,
        num_heads=8,
        qkv_dim=64,
        mlp_dim=128,
        num_layers=1,
        pool="cls",
        positional="learned",
        mask_zero_tokens=True,
        dropout_rate=0.3,
        attention_dropout_rate=0.2,
    )
    config.update(batch_size=256, eval_batch_size=256, num_train_steps=35_000)
    config.optimizer.update(schedule="cosine", learning_rate=5e-4, warmup_steps=175)
    config.optimizer.weight_decay = 0.0
    base.lra_model(config, "image")  # LRA's init and masks; evaluation every 175 steps
    if args["size"] == "tiny":  # keeps LRA's learned positions and zero-pixel masking
        base.shrink_lra_to_tiny(config)
        config.batch_size = 32
        config.eval_batch_size = 100
        config.optimizer.warmup_steps = 50
    base.self_pretraining(config, "image", args["pretrain"], tiny=args["size"] == "tiny")
    return config
