"""`ModelConfig`: every model hyperparameter, typed, frozen and checked once (`from_config`).

`config.model` (a ConfigDict, configs/base.py says what each field means) is read here and nowhere
else; the models take the `ModelConfig` this builds, with the attention variant's options already
resolved into its `Options` object.
"""

import dataclasses
from typing import Any

import ml_collections

from research.attention import resolve_options
from research.attention.base import INITS
from research.errors import UserError, check_choice, check_positive

HEADS = ("classifier", "two_tower", "tagger")
#: Heads that predict a class at every position (for tasks whose label is a sequence).
PER_POSITION_HEADS = ("tagger",)
POSITIONAL = ("learned", "sinusoidal", "none")
POOLING = ("cls", "mean", "last", "first")
TWO_TOWER_HEADS = ("lra", "interaction")
#: keys: only padded keys are masked; outer: LRA's outer product of the query and key masks.
PADDING_MASKS = ("keys", "outer")
#: real: the CLS vector is always a real token; first_token: it has the first token's mask (LRA).
CLS_MASKS = ("real", "first_token")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model's fields of `config.model`, checked. `attention_options` is the variant's
    resolved `Options` (None for a variant without options); `qkv_dim` is the total query/key/value
    width over heads (`config.model.qkv_dim`, or `emb_dim` where that is 0 or None);
    `class_token_offset` is the task's (`Task.class_token_offset`: class c is token offset + c),
    which a tied output layer (`tie_output`) reads."""

    head: str
    attention: str
    attention_options: Any
    causal: bool
    vocab_size: int
    num_classes: int
    max_len: int
    emb_dim: int
    num_heads: int
    qkv_dim: int
    mlp_dim: int
    mlp: bool
    num_layers: int
    dropout_rate: float
    attention_dropout_rate: float
    positional: str
    pool: str
    two_tower_head: str
    mask_zero_tokens: bool
    token_init_std: float
    position_init_std: float
    init: str
    padding_mask: str
    cls_mask: str
    tie_output: bool = False
    class_token_offset: int | None = None

    @classmethod
    def from_config(
        cls, model: ml_collections.ConfigDict, *, class_token_offset: int | None = None
    ) -> "ModelConfig":
        """Checks `model` (= config.model) and types it; a bad field is a one-line UserError
        naming `config.model.<field>`. `class_token_offset`: the task's (Task.class_token_offset),
        needed only under `tie_output`."""
        check_choice("config.model.head", model.head, HEADS)
        check_choice("config.model.pool", model.pool, POOLING)
        check_choice("config.model.positional", model.positional, POSITIONAL)
        check_choice("config.model.two_tower_head", model.two_tower_head, TWO_TOWER_HEADS)
        check_choice("config.model.mask_zero_tokens", model.mask_zero_tokens, (False, True))
        check_choice("config.model.mlp", model.mlp, (False, True))
        check_choice("config.model.init", model.init, INITS)
        check_choice("config.model.padding_mask", model.padding_mask, PADDING_MASKS)
        check_choice("config.model.cls_mask", model.cls_mask, CLS_MASKS)
        tie_output = model.get("tie_output", False)
        check_choice("config.model.tie_output", tie_output, (False, True))
        if tie_output:
            check_tie(model, class_token_offset)
        attention_options = resolve_options(
            model.attention, model.attention_options.get(model.attention, {})
        )
        for field in ("vocab_size", "max_len", "emb_dim", "num_heads", "mlp_dim", "num_layers"):
            check_positive(f"config.model.{field}", model[field])
        qkv_dim = model.qkv_dim or model.emb_dim
        if qkv_dim % model.num_heads:
            raise UserError(
                f"config.model.qkv_dim={qkv_dim} must be divisible by config.model.num_heads="
                f"{model.num_heads}"
            )
        for field in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= model[field] < 1.0:
                raise UserError(f"config.model.{field}={model[field]!r} must lie in [0, 1)")
        read = {"attention_options", "qkv_dim", "tie_output", "class_token_offset"}
        fields = {f.name: model[f.name] for f in dataclasses.fields(cls) if f.name not in read}
        return cls(
            **fields,
            attention_options=attention_options,
            qkv_dim=qkv_dim,
            tie_output=tie_output,
            class_token_offset=class_token_offset,
        )


def check_tie(model: ml_collections.ConfigDict, class_token_offset: int | None) -> None:
    """A tied output layer scores class c with token (class_token_offset + c)'s embedding: it
    needs the per-position head and a task whose classes are tokens inside the vocabulary."""
    if model.head not in PER_POSITION_HEADS:
        raise UserError(
            f"config.model.tie_output=True needs config.model.head in {PER_POSITION_HEADS} "
            f"(a class per position), not {model.head!r}; set tie_output=False"
        )
    if class_token_offset is None:
        raise UserError(
            "config.model.tie_output=True needs a task whose classes are tokens (recall's values);"
            " this task's classes are not: set config.model.tie_output=False"
        )
    if not 0 <= class_token_offset <= model.vocab_size - model.num_classes:
        raise UserError(
            f"config.model.tie_output=True: the task's classes are tokens {class_token_offset} .."
            f" {class_token_offset + model.num_classes - 1}, outside the vocabulary of "
            f"config.model.vocab_size={model.vocab_size}"
        )
