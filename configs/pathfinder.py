"""Pathfinder (32 x 32 and 64 x 64) and Path-X (128 x 128), mirroring LRA's released configs.

The images are generated on first use (every core; see docs/tasks.md for speeds), then reused:

  ./launch.sh train --config configs/pathfinder.py --workdir runs/pathfinder32
  ./launch.sh train --config configs/pathfinder.py:resolution=128 --workdir runs/pathx
  ./launch.sh train --config configs/pathfinder.py:contour_length=6 --workdir runs/pathfinder_easy
  ./launch.sh train --config configs/pathfinder.py:size=tiny --workdir runs/pathfinder_tiny

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>,
resolution=32|64|128 (128 is Path-X), contour_length=6|9|14 paddles (dashes) per target contour
(LRA uses the hardest, 14, for both Pathfinder and Path-X),
pretrain=none|causal|masked (self-pretraining on the task's own inputs first, as Amos et al.
2024 ran it: configs/base.py SELF_PRETRAINING; none trains from scratch, LRA's protocol).
To train on the LRA release's images instead, point --config.task_options.release_dir at the
folder holding pathfinder<resolution>/ (e.g. lra_release/).
"""

import ml_collections

from configs import base
from research.errors import UserError, check_choice

RESOLUTIONS = ("32", "64", "128")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, resolution="32", contour_length="14", pretrain="none")
    check_choice("config argument resolution", args["resolution"], RESOLUTIONS)
    if not args["contour_length"].isdigit():
        raise UserError(
            f"config argument contour_length={args['contour_length']!r} must be an integer "
            "(LRA: 6, 9 or 14)"
        )
    resolution = int(args["resolution"])
    # LRA: 160k/20k/20k images
    contour_length = int(args["contour_length"])
    config = base.task_config(
        "pathfinder", args["attention"], resolution=resolution, contour_length=contour_length
    )
    config.model.max_len = resolution * resolution
    # LRA masks every token 0, so black pixels (most of a Pathfinder image) are padding.
    config.model.mask_zero_tokens = True
    config.optimizer.schedule = "cosine"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0  # LRA's Pathfinder configs have no weight decay
    # Every size: dropout and attention dropout 0.1 unless set below; one warmup epoch of the
    # 160k training images and 200 epochs in all (LRA's steps are 160,000 // batch * 200).
    if resolution == 128:
        # Path-X: emb 32, 2 heads, 1 layer, qkv 16, mlp 32, mean pooling, learned positions,
        # batch 64, 500k steps, cosine to 1e-3 after 2,500 warmup steps, gradient clipping at 1.0.
        config.model.update(
            emb_dim=32,
            num_heads=2,
            qkv_dim=16,
            mlp_dim=32,
            num_layers=1,
            pool="mean",
            positional="learned",
        )
        config.batch_size = 64
        config.num_train_steps = 500_000
        config.optimizer.warmup_steps = 2_500
        config.optimizer.grad_clip_norm = 1.0
    elif resolution == 64:
        # Pathfinder 64: emb 32, 4 heads, 2 layers, qkv 32, mlp 32, CLS pooling, learned
        # positions, batch 256, 125k steps, cosine to 1e-3 after 625 warmup steps.
        config.model.update(
            emb_dim=32,
            num_heads=4,
            qkv_dim=32,
            mlp_dim=32,
            num_layers=2,
            pool="cls",
            positional="learned",
        )
        config.batch_size = 256
        config.num_train_steps = 125_000
        config.optimizer.warmup_steps = 625
    else:
        # Pathfinder 32: emb 32, 4 heads, 4 layers, qkv 16 (4 per head), mlp 32, mean pooling,
        # fixed sinusoidal positions (users report ~50% with them and ~70% with learned ones:
        # try --config.model.positional=learned), dropout 0.2, batch 512, 62,400 steps, cosine
        # to 1e-3 after 312 warmup steps.
        config.model.update(
            emb_dim=32,
            num_heads=4,
            qkv_dim=16,
            mlp_dim=32,
            num_layers=4,
            pool="mean",
            positional="sinusoidal",
            dropout_rate=0.2,
        )
        config.batch_size = 512
        config.num_train_steps = 62_400
        config.optimizer.warmup_steps = 312
    config.eval_batch_size = config.batch_size
    # LRA's init and masks; evaluation every 312 (32), 625 (64) or 2,500 (Path-X) steps
    name = {32: "pathfinder32", 64: "pathfinder64", 128: "pathx"}[resolution]
    base.lra_model(config, name)
    if args["size"] == "tiny":  # keeps the size's LRA positions, pooling and zero-pixel masking
        config.task_options.update(num_train=2_000, num_val=200, num_test=200)
        base.shrink_lra_to_tiny(config)
        config.batch_size = 32
        config.eval_batch_size = 100
        config.optimizer.warmup_steps = 50
    base.self_pretraining(config, name, args["pretrain"], tiny=args["size"] == "tiny")
    return config
