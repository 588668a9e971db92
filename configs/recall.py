"""Multi-query associative recall (MQAR) as Zoology defines it (Arora et al. 2023, Figure 2):
key-value pairs, then every key queried again; the target at each query is its value.

Generated on first use:

  ./launch.sh train --config configs/recall.py --workdir runs/recall
  ./launch.sh train --config configs/recall.py:attention=linear,width=64 --workdir runs/recall_lin
  ./launch.sh train --config configs/recall.py:pairs=4 --workdir runs/recall4
  ./launch.sh train --config configs/recall.py:size=tiny --workdir runs/recall_tiny

Arguments: size=base|tiny, attention=<a name in research.attention.ATTENTION>, pairs=<key-value
pairs per example> (8), length=<tokens per example> (default 16 x pairs: Figure 2's (64, 4),
(128, 8), (256, 16); at size=tiny the larger of 64 and 4 x pairs), width=<model width> (128;
Figure 2 sweeps 64..512; size=base only), mix=<a training mix of (length, pairs) segments, e.g.
64x4-128x8-256x16> (then every split holds each segment equally, each segment is also scored on
its own test split, and the length defaults to the longest; `pairs` is not used).

size=base is Figure 2's protocol: the data (vocabulary 8,192, keys from its lower half and values
from its upper half, queries at even offsets after the pairs placed by a power law with a = 0.01,
filler 0; 100,000 training sequences, 3,000 test) and its attention model (2 layers, 1 head, no
MLP, attention dropout 0.1, learned positions, causal, Zoology's N(0, 0.02) init, the output layer
tied to the token embedding), AdamW at 1e-3 with weight decay 0.1 and a cosine decay to 0, batch
512 (256 at length 256), 64 epochs, stopping once validation accuracy reaches 99%. Figure 2
reports every point as the best of the learning rates logspace(-4, -2, 4): experiments/zoology.py
sweeps them and reports `--best-over config.optimizer.learning_rate`. docs/tasks.md lists what
still differs.

size=tiny is a laptop's MQAR (the demo's): the same generator at a vocabulary of 128 (keys 1-63,
values 64-127: chance 1/64, not 1/4,096), 5,000 training sequences of 64 tokens (up to 16 pairs),
a 2-layer width-64 model with an MLP, 4 heads and fixed sinusoidal positions, batch 64, a constant
1e-3: minutes, not hours, and not Figure 2's protocol (docs/tasks.md: at a vocabulary of 256 full
attention needs about twice the steps).

The model predicts at every position (`model.head = "tagger"`), scored at the queries only.
"""

import ml_collections

from configs import base
from research.errors import UserError

ZOOLOGY_LEARNING_RATES = (1e-4, 4.6416e-4, 2.1544e-3, 1e-2)  # logspace(-4, -2, 4)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = base.task_args(arg, length="", pairs="8", width="128", mix="")
    pairs = base.positive_arg(args, "pairs")
    mix = parse_mix(args["mix"])
    # Unset, the length follows the pairs: Figure 2's 16 tokens per pair, or on a laptop the
    # larger of 64 and 4 per pair (so `pairs=` alone sweeps either); with a mix, its longest.
    tiny = args["size"] == "tiny"
    default_length = max(64, 4 * pairs) if tiny else 16 * pairs
    args["length"] = args["length"] or str(max((n for n, _ in mix), default=default_length))
    length = base.positive_arg(args, "length")
    width = base.positive_arg(args, "width")
    config = base.task_config("recall", args["attention"], num_pairs=pairs, length=length)
    config.task_options.mix = mix
    # Windows shorter than most key-query gaps, so that the local variants show what their reach
    # costs: a window of 8 reaches 8 positions back per layer (16 over 2 layers, since windows
    # compose); a block of 16 reaches only inside its own block in every layer (blocks do not
    # compose), so no query at position >= 16 sees a pair in the first block.
    config.model.attention_options.local.window = 8
    config.model.attention_options.block_local.block_size = 16
    # T5's buckets: a causal model sees only the past, so all of them go to it.
    config.model.attention_options.t5.t5_bidirectional = False
    base.diagnostic_setup(config, causal=True, max_len=length)
    if tiny:
        config.task_options.update(vocab_size=128, num_train=5_000, num_val=500, num_test=500)
        config.num_train_steps = 1_500
        config.eval_every_steps = 250
        return config
    zoology_figure2(config, width=width, length=length)
    return config


def parse_mix(text: str) -> tuple[tuple[int, int], ...]:
    """A mix argument as segments: 64x4-128x8 -> ((64, 4), (128, 8)); empty -> () (no mix)."""
    if not text:
        return ()
    try:
        return tuple(
            (int(length), int(pairs))
            for length, pairs in (item.split("x") for item in text.split("-"))
        )
    except ValueError as error:
        raise UserError(
            f"config argument mix={text!r} is not valid; give <length>x<pairs> segments joined "
            "by '-', e.g. mix=64x4-128x8-256x16"
        ) from error


def zoology_figure2(config: ml_collections.ConfigDict, *, width: int, length: int) -> None:
    """Zoology Figure 2's model and training (the data are the task options' defaults)."""
    config.model.update(
        emb_dim=width,
        qkv_dim=width,
        num_heads=1,
        num_layers=2,
        mlp=False,
        dropout_rate=0.0,
        attention_dropout_rate=0.1,
        positional="learned",
        token_init_std=0.02,
        position_init_std=0.02,
        init="zoology",
        tie_output=True,
    )
    config.batch_size = 256 if length >= 256 else 512
    config.eval_batch_size = 500
    epochs = 64
    config.num_train_steps = epochs * config.task_options.num_train // config.batch_size
    config.eval_every_steps = config.task_options.num_train // config.batch_size  # an epoch
    config.checkpoint_every_steps = 10 * config.eval_every_steps
    config.stop_at_validation_accuracy = 0.99  # Zoology's TrainConfig: stop at 99% accuracy
    config.optimizer.update(schedule="cosine", learning_rate=1e-3, warmup_steps=0)
    config.optimizer.update(weight_decay=0.1, b1=0.9, b2=0.999, eps=1e-8)
