"""Model registry: `ModelConfig.head` -> model class, and the check that a head fits its task.

`ModelConfig.from_config(config.model)` (research/models/config.py) checks and types the model's
config once; `build_model` builds from that.
"""

from flax import nnx

from research.errors import UserError
from research.models.config import HEADS, PER_POSITION_HEADS, ModelConfig
from research.models.heads import Classifier, Tagger, TokenPredictor, TwoTower, encoder_has_cls

__all__ = [
    "MODELS",
    "ModelConfig",
    "TokenPredictor",
    "build_model",
    "check_head_fits_task",
    "encoder_has_cls",
]

MODELS = {
    "classifier": Classifier,
    "two_tower": TwoTower,
    "tagger": Tagger,
}


def check_head_fits_task(head: str, task: str, *, per_position: bool) -> None:
    """Refuses a head that reads the wrong kind of label: a class per example (classifier,
    two_tower) or a class per position (tagger); the error lists the heads that fit."""
    fitting = [name for name in HEADS if (name in PER_POSITION_HEADS) == per_position]
    if head not in fitting:
        kind = "a target at every position" if per_position else "one label per example"
        raise UserError(
            f"config.model.head={head!r} does not fit task {task}, which has {kind}; choose one "
            f"of: {', '.join(sorted(fitting))}"
        )


def build_model(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    """The model `config.head` names, built from the checked `config`."""
    return MODELS[config.head](config, rngs=rngs)
