"""Model registry: `config.model.head` -> model class, plus config validation for models."""

from flax import nnx

from research.attention import resolve_options
from research.errors import UserError, check_choice, check_positive
from research.models.encoder import POSITIONAL
from research.models.heads import POOLING, TWO_TOWER_HEADS, Classifier, Tagger, TwoTower

MODELS = {
    "classifier": Classifier,
    "two_tower": TwoTower,
    "tagger": Tagger,
}
#: Heads that predict a class at every position (for tasks whose label is a sequence).
PER_POSITION_HEADS = ("tagger",)


def validate_model_config(config) -> None:
    """Checks `config.model` before anything is built; raises UserError naming the bad field."""
    check_choice("config.model.head", config.head, sorted(MODELS))
    check_choice("config.model.pool", config.pool, POOLING)
    check_choice("config.model.positional", config.positional, POSITIONAL)
    check_choice("config.model.two_tower_head", config.two_tower_head, TWO_TOWER_HEADS)
    check_choice("config.model.mask_zero_tokens", config.mask_zero_tokens, (False, True))
    resolve_options(config.attention, config.attention_options.get(config.attention, {}))
    for field in ("vocab_size", "max_len", "emb_dim", "num_heads", "mlp_dim", "num_layers"):
        check_positive(f"config.model.{field}", config[field])
    qkv = config.qkv_dim or config.emb_dim
    if qkv % config.num_heads:
        raise UserError(
            f"config.model.qkv_dim={qkv} must be divisible by config.model.num_heads="
            f"{config.num_heads}"
        )
    for field in ("dropout_rate", "attention_dropout_rate"):
        if not 0.0 <= config[field] < 1.0:
            raise UserError(f"config.model.{field}={config[field]!r} must lie in [0, 1)")


def check_head_fits_task(head: str, task: str, *, per_position: bool) -> None:
    """Refuses a head that reads the wrong kind of label: a class per example (classifier,
    two_tower) or a class per position (tagger); the error lists the heads that fit."""
    fitting = [name for name in MODELS if (name in PER_POSITION_HEADS) == per_position]
    if head not in fitting:
        kind = "a target at every position" if per_position else "one label per example"
        raise UserError(
            f"config.model.head={head!r} does not fit task {task}, which has {kind}; choose one "
            f"of: {', '.join(sorted(fitting))}"
        )


def build_model(config, *, rngs: nnx.Rngs) -> nnx.Module:
    """Validates `config` (= config.model) and builds the model it names."""
    validate_model_config(config)
    return MODELS[config.head](config, rngs=rngs)
