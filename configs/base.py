"""Defaults shared by every task config; task configs override what they need.

Fields map one-to-one onto `research.training.train.train_and_evaluate` and the modules it builds.
"""

import math

import ml_collections

from research import tasks
from research.attention import ATTENTION, default_options
from research.cli.config_spec import parse_arg
from research.errors import UserError, check_choice, check_known

LRA_RSQRT_CONSTANT = 0.05  # the "learning rate" of LRA's ListOps, Text and Retrieval configs


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Data: `task` names an entry of research.tasks.TASKS; its own options live in task_options.
    config.task = "listops"
    config.task_options = ml_collections.ConfigDict()
    config.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.truncate = False  # cut inputs longer than model.max_len (else they are an error)
    config.batch_size = 32
    config.eval_batch_size = 32

    # Loop: steps are optimizer updates; evaluation covers each split completely.
    config.num_train_steps = 5_000
    config.log_every_steps = 100
    config.eval_every_steps = 1_000
    config.test_params = "last"  # "last" or "best_val": which parameters the test score uses
    # > 0: stop training at the first evaluation whose validation accuracy reaches this (Zoology's
    # early stopping at 0.99), then score the test split; 0 = train every step
    config.stop_at_validation_accuracy = 0.0
    # "START:STOP": a jax.profiler trace of steps START to STOP-1 in <workdir>/profile, for
    # TensorBoard's profile plugin (research/training/profiling.py); "" = no trace
    config.profile_steps = ""

    # Devices and resuming (research/training/parallel.py, research/training/checkpoint.py).
    config.parallelism = "jit"  # jit (NamedSharding over all devices) | pmap
    config.fsdp = False  # jit only: shard parameters and optimizer state across devices
    # Forward-pass precision; parameters and optimizer state stay float32. bfloat16 on TPUs and
    # recent GPUs (where full attention's `auto` implementation then picks cuDNN).
    config.compute_dtype = "float32"
    config.checkpoint_every_steps = 1_000  # 0 = only at the end and on preemption
    config.checkpoints_to_keep = 3  # 0 = keep all
    config.allow_config_change = False  # resume a workdir whose model or task config differs
    config.compilation_cache_dir = "~/.cache/research/jax"  # "" = no persistent cache

    # Self-pretraining (research/training/pretrain.py; Amos et al., "Never Train from Scratch"):
    # `steps` > 0 first trains the encoder to predict the task's own training inputs (never labels
    # or held-out inputs), then trains the task from it; 0 = from scratch, as LRA trains.
    config.pretrain = ml_collections.ConfigDict()
    config.pretrain.steps = 0
    # causal (next token, through the variant's causal form) | masked (a fraction `mask_rate` of
    # the real tokens replaced by a mask token and predicted, in the model's own form)
    config.pretrain.objective = "causal"
    config.pretrain.mask_rate = 0.15
    # its own optimizer, the fields of config.optimizer: the paper's constant rate after warmup
    config.pretrain.optimizer = ml_collections.ConfigDict(
        dict(schedule="constant", learning_rate=1e-3, warmup_steps=1_000, weight_decay=0.0)
    )
    config.pretrain.optimizer.update(b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0)
    # A workdir whose pretraining (same task, encoder and config.pretrain) to start from instead
    # of pretraining here, so that several runs fine-tune one pretrained encoder; "" = none.
    config.init_from = ""

    config.optimizer = ml_collections.ConfigDict()
    # schedule: rsqrt | cosine | constant. learning_rate is the peak rate, reached at the end of
    # warmup, under every schedule; here LRA's rsqrt schedule (lra_rsqrt): 0.05 / sqrt(1000).
    lra_rsqrt(config.optimizer, warmup_steps=1_000)
    config.optimizer.weight_decay = 0.1
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.eps = 1e-9
    config.optimizer.grad_clip_norm = 0.0  # 0 = no clipping

    config.model = ml_collections.ConfigDict()
    config.model.head = "classifier"
    config.model.attention = "full"
    config.model.attention_options = ml_collections.ConfigDict(
        {name: default_options(name) for name in ATTENTION}
    )
    config.model.causal = False
    config.model.vocab_size = ml_collections.config_dict.placeholder(int)  # set by the task
    config.model.num_classes = ml_collections.config_dict.placeholder(int)  # set by the task
    config.model.max_len = 2_000
    config.model.emb_dim = 512
    config.model.num_heads = 8
    config.model.qkv_dim = 512  # total over heads, as in LRA
    config.model.mlp_dim = 1_024
    # False: blocks are attention only (Zoology's MQAR model, whose state mixer is the identity)
    config.model.mlp = True
    config.model.num_layers = 4
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1
    config.model.positional = "learned"  # learned | sinusoidal | none
    # cls (a CLS vector prepended) | mean | last (the last real token) | first (the first real
    # token, no CLS vector: LRA's dual encoder)
    config.model.pool = "cls"
    # Two-tower heads (research/models/heads.py TwoTower): lra ([u, v] -> Dense mlp_dim -> ReLU ->
    # Dense mlp_dim / 2 -> ReLU -> classes, LRA's dual encoder) | interaction ([u, v, u*v, u-v] ->
    # Dense mlp_dim -> ReLU -> classes)
    config.model.two_tower_head = "interaction"
    # LRA masks every token 0 (`inputs > 0`), so black pixels are padding on its pixel tasks; the
    # attention mask and mean pooling then skip them. False: only real padding is masked.
    config.model.mask_zero_tokens = False
    config.model.token_init_std = 1.0
    config.model.position_init_std = 0.02
    # How attention projections and MLP layers start: nnx (flax's defaults: LeCun-normal kernels,
    # zero biases) | lra (LRA's model: projections Xavier-uniform without biases, MLP
    # Xavier-uniform with biases ~ N(0, 1e-6)); `lra_model` sets it in the LRA configs | zoology
    # (Zoology's: kernels N(0, 0.02), layers writing into the residual N(0, 0.02/sqrt(2 layers)),
    # zero biases); configs/recall.py's Figure 2 model uses it.
    config.model.init = "nnx"
    # The per-position head's output layer: its own (False), or the token embedding (True, as
    # Zoology's language model ties them), for tasks whose classes are tokens (MQAR's values).
    config.model.tie_output = False
    # keys (padded keys are masked) | outer (LRA: the outer product of query and key masks, so a
    # padded query is masked too; under LRA's -1e10 bias its row attends uniformly)
    config.model.padding_mask = "keys"
    # real (the CLS vector is always a real token) | first_token (LRA: CLS has the first token's
    # mask, so it is padding wherever the first token is, e.g. a black first pixel)
    config.model.cls_mask = "real"
    return config


SIZES = ("base", "tiny")  # every task config's `size` argument: LRA's model, or a laptop's


def task_args(arg: str | None, **defaults: str) -> dict[str, str]:
    """A task config's arguments: `size` (base | tiny), `attention` (full) and the task's own
    `defaults`; an unknown key or size is a one-line error."""
    args = parse_args(arg, {"size": "base", "attention": "full", **defaults})
    check_choice("config argument size", args["size"], SIZES)
    return args


def task_config(task: str, attention: str, **task_changes) -> ml_collections.ConfigDict:
    """The defaults above with `task` set (`set_task`) and the attention variant chosen."""
    config = get_config()
    set_task(config, task, **task_changes)
    config.model.attention = attention
    return config


def set_task(config: ml_collections.ConfigDict, task: str, **changes) -> None:
    """Sets `config.task` and `config.task_options`: the task's own defaults (stated once, in the
    dataclass its module defines) with `changes`, so a config states only what differs."""
    options = tasks.get_task(task).default_options()
    check_known(f"task {task}", changes, options, kind="option")
    config.task = task
    config.task_options = ml_collections.ConfigDict({**options, **changes})


# Evaluation every this many steps in LRA's released configs (its eval_frequency).
LRA_EVAL_EVERY = {
    "listops": 50,
    "text": 100,
    "retrieval": 100,
    "image": 175,
    "pathfinder32": 312,
    "pathfinder64": 625,
    "pathx": 2_500,
}


# Self-pretraining as Amos et al. (ICLR 2024) ran it on LRA's models (their section 3.1): per LRA
# config, (pretraining epochs, warmup steps, masking rate, peak learning rate per objective).
# Epochs and warmup from their repository's configs/experiment/lra/transformer-lra-*-{lm,mlm}.yaml
# (constant rate after warmup, AdamW b2 0.999, no weight decay but Text's 0.1); rates from their
# Table 4 (its (fine-tuning, pretraining) pairs; Pathfinder's and Path-X's second row taken as the
# causal one); masking rates from their section 2 (ListOps 10%, language 15%, visual tasks 50%).
SELF_PRETRAINING = {
    "listops": (100, 2_000, 0.10, {"masked": 1e-3, "causal": 5e-4}),
    "text": (32, 5_000, 0.15, {"masked": 5e-4, "causal": 1e-3}),
    "retrieval": (32, 2_000, 0.15, {"masked": 5e-3, "causal": 5e-3}),
    "image": (50, 2_500, 0.50, {"masked": 1e-3, "causal": 5e-3}),
    "pathfinder32": (50, 2_500, 0.50, {"masked": 1e-3, "causal": 1e-3}),
    "pathfinder64": (50, 2_500, 0.50, {"masked": 1e-3, "causal": 1e-3}),
    "pathx": (200, 5_000, 0.50, {"masked": 5e-4, "causal": 1e-3}),
}
# Training examples of the tasks read from files (the generated ones state theirs as num_train):
# IMDb's 25,000 reviews, AAN's 147,086 pairs, CIFAR-10's 50,000 images less the validation tenth.
TRAIN_EXAMPLES = {"text": 25_000, "retrieval": 147_086, "image": 45_000}
PRETRAIN_CHOICES = ("none", "causal", "masked")


def self_pretraining(
    config: ml_collections.ConfigDict, name: str, objective: str, *, tiny: bool
) -> None:
    """The `pretrain` argument of the LRA task configs: "none" (LRA's protocol, from scratch), or
    pretraining with `objective` as Amos et al. ran it (SELF_PRETRAINING), for as many steps as
    their epochs take at this config's batch size. Call it last: at size=tiny it pretrains as long
    as the task trains, with a tenth of that as warmup. The task's own training is unchanged, so
    the two protocols differ in the pretraining alone; docs/tasks.md lists what else differs from
    the paper."""
    check_choice("config argument pretrain", objective, PRETRAIN_CHOICES)
    if objective == "none":
        return
    epochs, warmup, mask_rate, rates = SELF_PRETRAINING[name]
    examples = config.task_options.get("num_train") or TRAIN_EXAMPLES[name]
    steps = epochs * examples // config.batch_size
    if tiny:
        steps = config.num_train_steps
        warmup = steps // 10
    config.pretrain.update(steps=steps, objective=objective, mask_rate=mask_rate)
    config.pretrain.optimizer.update(learning_rate=rates[objective], warmup_steps=warmup)
    config.pretrain.optimizer.weight_decay = 0.1 if name == "text" else 0.0


def lra_model(config: ml_collections.ConfigDict, name: str) -> None:
    """LRA's model beyond its config fields, for LRA task config `name` (a key of LRA_EVAL_EVERY):
    its initialisation, its outer-product padding mask with the CLS vector taking the first
    token's mask (lra_benchmarks/models/transformer/transformer.py), and its evaluation
    frequency. docs/tasks.md says what each changes."""
    config.model.update(init="lra", padding_mask="outer", cls_mask="first_token")
    config.eval_every_steps = LRA_EVAL_EVERY[name]


def shrink_lra_to_tiny(
    config: ml_collections.ConfigDict, *, num_train_steps: int = 500, **model_changes
) -> None:
    """The `size=tiny` preset of the LRA task configs: a one-layer model of width 32 (2 heads, MLP
    64) without dropout, trained `num_train_steps` steps with a log every 50 and an evaluation
    every 250: a few minutes on a laptop CPU. `model_changes` are the task's own (its max_len, say);
    positions, pooling and head stay the task's."""
    tiny = dict(emb_dim=32, num_heads=2, qkv_dim=32, mlp_dim=64, num_layers=1)
    no_dropout = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
    config.model.update({**tiny, **no_dropout, **model_changes})
    config.num_train_steps = num_train_steps
    config.log_every_steps = 50
    config.eval_every_steps = 250


def diagnostic_setup(config: ml_collections.ConfigDict, **model_changes) -> None:
    """What the diagnostics (recall, distance) share: a 2-layer width-64 tagger (a class per
    position) with fixed sinusoidal positions and unit-scale token embeddings, no dropout, trained
    at a constant 1e-3 without weight decay. docs/tasks.md says why these choices."""
    config.model.update(
        dict(head="tagger", emb_dim=64, num_heads=4, qkv_dim=64, mlp_dim=128, num_layers=2)
    )
    config.model.update(dict(dropout_rate=0.0, attention_dropout_rate=0.0, positional="sinusoidal"))
    config.model.update(token_init_std=1.0, **model_changes)
    config.update(batch_size=64, eval_batch_size=250, log_every_steps=100, eval_every_steps=500)
    config.optimizer.update(schedule="constant", learning_rate=1e-3, warmup_steps=100)
    config.optimizer.weight_decay = 0.0


def lra_rsqrt(optimizer: ml_collections.ConfigDict, *, warmup_steps: int) -> None:
    """LRA's rsqrt schedule, c * min(1, s/w) / sqrt(max(s, w)) with its configs' c = 0.05.

    Our rsqrt is peak * min(1, s/w) * sqrt(w / max(s, w)), so the same schedule has the peak
    c / sqrt(w): it depends on the warmup, and is set with it.
    """
    optimizer.schedule = "rsqrt"
    optimizer.warmup_steps = warmup_steps
    optimizer.learning_rate = LRA_RSQRT_CONSTANT / math.sqrt(warmup_steps)


def parse_args(arg: str | None, defaults: dict[str, str]) -> dict[str, str]:
    """Parses a config string argument `key=value,key=value` against the keys of `defaults`, the
    values as strings (research.cli.config_spec.parse_arg). An unknown key or a malformed item is a
    one-line error listing the valid keys."""
    return parse_arg(arg, **{key: (default, str) for key, default in defaults.items()})


def positive_arg(args: dict[str, str], key: str) -> int:
    """A parsed config argument that must be a positive integer (one-line error otherwise)."""
    if not args[key].isdigit() or int(args[key]) < 1:
        raise UserError(f"config argument {key}={args[key]!r} must be a positive integer")
    return int(args[key])
