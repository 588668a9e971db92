"""Transformer encoder with an attention slot: embeddings, N pre-norm blocks, a final norm.

The attention variant is the class `research.attention.ATTENTION` names, built from the options
`ModelConfig` resolved, so this module knows only the shared interface. Masks: `mask_BT` is True
for real tokens, False for padding.

LRA's model (lra_benchmarks/models/transformer/transformer.py and common_layers.py, on flax's old
nn.attention) where `config.init = "lra"`, `config.padding_mask = "outer"` and
`config.cls_mask = "first_token"`: attention projections Xavier-uniform without biases, MLP
kernels Xavier-uniform with biases ~ N(0, 1e-6); the attention mask the outer product of the
query and key masks (a padded query attends uniformly, SelfAttention.mask_queries); the CLS
vector masked wherever the first token is padding.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from research.attention import ATTENTION
from research.attention.base import zoology_init
from research.models.config import ModelConfig


@functools.cache
def sinusoidal_positions(length: int, features: int) -> np.ndarray:
    """pos_TE: the fixed sin/cos table of Vaswani et al. (sin on even, cos on odd features).

    Not model state: a step function holds it as a constant, so it is neither checkpointed nor
    passed into every step. Computed once per shape, by jax eagerly even when called inside `jit`
    (so its values are those the table had as state), and kept as a read-only host array that no
    donation or caller can change.
    """
    with jax.ensure_compile_time_eval():
        position = jnp.arange(length)[:, None]
        inv_freq = jnp.exp(jnp.arange(0, features, 2) * (-math.log(10000.0) / features))
        table = jnp.zeros((length, features))
        table = table.at[:, 0::2].set(jnp.sin(position * inv_freq))
        table = np.array(table.at[:, 1::2].set(jnp.cos(position * inv_freq[: features // 2])))
    table.flags.writeable = False
    return table


class Embedding(nnx.Module):
    """Token embedding plus positions, with an optional learned CLS vector in front.

    With `prepend_cls=True` the output is one position longer and position 0 holds CLS, a real
    token in the mask (`cls_mask="real"`) or masked where the first token is padding
    (`cls_mask="first_token"`, LRA's `src_padding_mask[:, :1]`).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_len: int,
        features: int,
        positional: str,
        prepend_cls: bool,
        token_init_std: float,
        position_init_std: float,
        cls_mask: str = "real",
        rngs: nnx.Rngs,
    ):
        self.positional = positional
        self.cls_mask = cls_mask
        self.length = max_len + int(prepend_cls)
        self.tokens = nnx.Embed(
            vocab_size, features, embedding_init=nnx.initializers.normal(token_init_std), rngs=rngs
        )
        self.cls = nnx.Param(jnp.zeros((1, 1, features))) if prepend_cls else None
        if positional == "learned":
            init = nnx.initializers.normal(position_init_std)
            self.positions = nnx.Param(init(rngs.params(), (self.length, features)))
        else:
            self.positions = None

    def __call__(self, tokens_BT: Array, mask_BT: Array) -> tuple[Array, Array]:
        """Returns (x_BLE, mask_BL), L = T or T + 1 with CLS."""
        # nnx.Embed fixes its output dtype when built (float32); the table is cast to the compute
        # dtype (steps.cast_floating), so follow it, or a bfloat16 model computes in float32.
        x_BTE = self.tokens(tokens_BT).astype(self.tokens.embedding.dtype)
        if self.cls is not None:
            batch = tokens_BT.shape[0]
            cls_B1E = jnp.broadcast_to(self.cls[...], (batch, 1, x_BTE.shape[-1]))
            x_BTE = jnp.concatenate([cls_B1E, x_BTE], axis=1)
            if self.cls_mask == "first_token":
                cls_mask_B1 = mask_BT[:, :1].astype(bool)
            else:
                cls_mask_B1 = jnp.ones((batch, 1), bool)
            mask_BT = jnp.concatenate([cls_mask_B1, mask_BT], axis=1)
        if self.positional == "learned":
            x_BTE = x_BTE + self.positions[: x_BTE.shape[1]][None]
        elif self.positional == "sinusoidal":
            table_LE = sinusoidal_positions(self.length, x_BTE.shape[-1])
            # In the embeddings' dtype: a float32 table would promote a bfloat16 model to float32.
            x_BTE = x_BTE + table_LE[: x_BTE.shape[1]][None].astype(x_BTE.dtype)
        return x_BTE, mask_BT


def mlp_init(init: str, *, num_layers: int) -> tuple[dict, dict]:
    """The `nnx.Linear` arguments (first layer, second layer) of the MLP under `config.init`:
    flax's defaults ("nnx": LeCun-normal kernels, zero biases), LRA's MlpBlock ("lra":
    Xavier-uniform kernels, biases ~ N(0, 1e-6)) or Zoology's ("zoology": N(0, 0.02) kernels, the
    second layer's N(0, 0.02 / sqrt(2 x num_layers)), zero biases)."""
    if init == "lra":
        made = {
            "kernel_init": nnx.initializers.xavier_uniform(),
            "bias_init": nnx.initializers.normal(1e-6),
        }
        return made, made
    if init == "zoology":
        return zoology_init(num_layers)
    return {}, {}


class Mlp(nnx.Module):
    """Linear -> GELU -> dropout -> Linear; `init` as `mlp_init`."""

    def __init__(
        self,
        features: int,
        hidden: int,
        dropout_rate: float,
        *,
        init: str = "nnx",
        num_layers: int = 1,
        rngs: nnx.Rngs,
    ):
        up_made, down_made = mlp_init(init, num_layers=num_layers)
        self.up = nnx.Linear(features, hidden, **up_made, rngs=rngs)
        self.down = nnx.Linear(hidden, features, **down_made, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x: Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
        hidden = self.dropout(jax.nn.gelu(self.up(x)), deterministic=deterministic, rngs=rngs)
        return self.down(hidden)


class EncoderBlock(nnx.Module):
    """Pre-norm residual block: x + Attn(LN(x)), then x + Mlp(LN(x)) (the MLP half only where
    `config.mlp`; without it the block is attention alone, as in Zoology's MQAR model)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        width = config.emb_dim
        self.attention_norm = nnx.LayerNorm(width, rngs=rngs)
        self.attention = ATTENTION[config.attention](
            config.attention_options,
            in_features=width,
            num_heads=config.num_heads,
            qkv_features=config.qkv_dim,
            causal=config.causal,
            dropout_rate=config.attention_dropout_rate,
            init=config.init,
            num_layers=config.num_layers,
            rngs=rngs,
        )
        self.mask_queries = config.padding_mask == "outer"
        if config.mlp:
            self.mlp_norm = nnx.LayerNorm(width, rngs=rngs)
            self.mlp = Mlp(
                width,
                config.mlp_dim,
                config.dropout_rate,
                init=config.init,
                num_layers=config.num_layers,
                rngs=rngs,
            )
        else:
            self.mlp_norm = self.mlp = None
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x_BTE, mask_BT, *, deterministic: bool, rngs: nnx.Rngs | None):
        y = self.attention(
            self.attention_norm(x_BTE),
            mask_BT,
            query_mask_BT=mask_BT if self.mask_queries else None,
            deterministic=deterministic,
            rngs=rngs,
        )
        x_BTE = x_BTE + self.dropout(y, deterministic=deterministic, rngs=rngs)
        if self.mlp is None:
            return x_BTE
        y = self.mlp(self.mlp_norm(x_BTE), deterministic=deterministic, rngs=rngs)
        return x_BTE + self.dropout(y, deterministic=deterministic, rngs=rngs)


class Encoder(nnx.Module):
    """Embedding, `num_layers` pre-norm blocks and a final LayerNorm.

    `config` is the checked `ModelConfig`; its fields name every hyperparameter here.
    `prepend_cls` (default: `config.pool == "cls"`) puts a learned CLS vector in front; heads that
    read every position pass False.
    """

    def __init__(self, config: ModelConfig, *, prepend_cls: bool | None = None, rngs: nnx.Rngs):
        if prepend_cls is None:
            prepend_cls = config.pool == "cls"
        self.embedding = Embedding(
            vocab_size=config.vocab_size,
            max_len=config.max_len,
            features=config.emb_dim,
            positional=config.positional,
            prepend_cls=prepend_cls,
            token_init_std=config.token_init_std,
            position_init_std=config.position_init_std,
            cls_mask=config.cls_mask,
            rngs=rngs,
        )
        self.mask_zero_tokens = config.mask_zero_tokens
        self.dropout = nnx.Dropout(config.dropout_rate)
        self.blocks = nnx.List([EncoderBlock(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(config.emb_dim, rngs=rngs)

    def embed(self, tokens_BT: Array, mask_BT: Array) -> tuple[Array, Array]:
        """(x_BLE, mask_BL) that the first block reads (before dropout).

        With `mask_zero_tokens` every token 0 counts as padding (LRA's `inputs > 0`), for the
        attention and, through the returned mask, for pooling.
        """
        if self.mask_zero_tokens:
            mask_BT = mask_BT & (tokens_BT != 0)
        return self.embedding(tokens_BT, mask_BT)

    def __call__(
        self, tokens_BT: Array, mask_BT: Array, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> tuple[Array, Array]:
        """Returns (encoded_BLE, mask_BL); L = T + 1 when a CLS vector is prepended."""
        x_BTE, mask_BT = self.embed(tokens_BT, mask_BT)
        x_BTE = self.dropout(x_BTE, deterministic=deterministic, rngs=rngs)
        for block in self.blocks:
            x_BTE = block(x_BTE, mask_BT, deterministic=deterministic, rngs=rngs)
        return self.final_norm(x_BTE), mask_BT
