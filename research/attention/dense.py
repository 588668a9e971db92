"""Dense softmax attention: one (T, S) score matrix, the reference every other path is tested
against, and the fastest on CPU at short lengths.

`attention_weights` scores (softmax of q k^T / sqrt(D) + bias under a boolean mask, as
`Band.mask` builds it); `positional_attention` adds a position scheme's logit bias and value term
(where the scheme's `adds_bias` / `adds_value` say so) for a tile whose keys start `offset` after
its queries (0 for a whole sequence, which is how the dispatcher's dense path calls it);
`positional_weights`, its scoring half, is shared with the `weights` methods that draw attention
maps.
"""

import jax
import jax.numpy as jnp
from jax import Array

from research.attention.dropout import drop_weights
from research.attention.relative import Position


def attention_weights(
    q_XTHD: Array,
    k_XSHD: Array,
    mask_X1TS: Array | None = None,
    bias_XHTS: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """weights_XHTS = softmax(q k^T / sqrt(D) + bias) in float32 over any leading shape X.

    Masked keys get weight exactly 0; a query with every key masked gets an all-zero row (and zero
    gradient) instead of NaN or a uniform average over padding.
    """
    scale = q_XTHD.shape[-1] ** -0.5
    logits = jnp.einsum(
        "...thd,...shd->...hts", q_XTHD * scale, k_XSHD, preferred_element_type=jnp.float32
    )
    if bias_XHTS is not None:
        logits = logits + bias_XHTS
    if mask_X1TS is not None:
        logits = jnp.where(mask_X1TS, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask_X1TS is not None:
        weights = jnp.where(mask_X1TS, weights, 0.0)
    return drop_weights(weights, dropout_rate, dropout_key)


def dot_product_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    mask_B1TS: Array | None = None,
    bias_BHTS: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """softmax(q k^T / sqrt(D) + bias) v; returns out_BTHD (any leading shape in place of B)."""
    weights = attention_weights(
        q_BTHD, k_BSHD, mask_B1TS, bias_BHTS, dropout_rate=dropout_rate, dropout_key=dropout_key
    )
    return jnp.einsum("...hts,...shd->...thd", weights.astype(v_BSHD.dtype), v_BSHD)


def positional_weights(
    q_XTHD: Array,
    k_XSHD: Array,
    mask_X1TS: Array | None,
    position: Position,
    offset: int | Array,
    *,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """weights_XHTS of a tile at `offset` under a position scheme's logit bias (the scoring half
    of `positional_attention`, shared with the `weights` methods that draw attention maps)."""
    bias = position.logits_bias(q_XTHD, k_XSHD.shape[-3], offset) if position.adds_bias else None
    return attention_weights(
        q_XTHD, k_XSHD, mask_X1TS, bias, dropout_rate=dropout_rate, dropout_key=dropout_key
    )


def positional_attention(
    q_XTHD: Array,
    k_XSHD: Array,
    v_XSHD: Array,
    mask_X1TS: Array | None,
    position: Position,
    offset: int,
    *,
    dropout_rate: float,
    dropout_key: jax.Array | None,
) -> Array:
    """Dense attention with a position scheme's bias and value term for a tile at `offset`."""
    weights = positional_weights(
        q_XTHD,
        k_XSHD,
        mask_X1TS,
        position,
        offset,
        dropout_rate=dropout_rate,
        dropout_key=dropout_key,
    )
    out = jnp.einsum("...hts,...shd->...thd", weights.astype(v_XSHD.dtype), v_XSHD)
    if not position.adds_value:
        return out
    return out + position.value_term(weights, offset).astype(out.dtype)


def pad_to(x: Array, length: int, axis: int = 1) -> Array:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, pad)
