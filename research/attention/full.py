"""Full softmax attention: every query scores every key (O(N^2) time and memory)."""

import jax
import jax.numpy as jnp
from jax import Array

from research.attention.base import SelfAttention
from research.attention.masks import attention_mask


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
    """softmax(q k^T / sqrt(D) + bias) v, computed in float32; returns out_BTHD.

    A query whose keys are all masked gets a zero output (and zero gradient) instead of NaN or a
    uniform average over padding.
    """
    dtype = q_BTHD.dtype
    scale = q_BTHD.shape[-1] ** -0.5
    logits_BHTS = jnp.einsum(
        "bthd,bshd->bhts", q_BTHD * scale, k_BSHD, preferred_element_type=jnp.float32
    )
    if bias_BHTS is not None:
        logits_BHTS = logits_BHTS + bias_BHTS
    if mask_B1TS is not None:
        logits_BHTS = jnp.where(mask_B1TS, logits_BHTS, jnp.finfo(jnp.float32).min)
    weights_BHTS = jax.nn.softmax(logits_BHTS, axis=-1)
    if mask_B1TS is not None:
        weights_BHTS = jnp.where(mask_B1TS, weights_BHTS, 0.0)
    if dropout_key is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, weights_BHTS.shape)
        weights_BHTS = jnp.where(keep, weights_BHTS / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bhts,bshd->bthd", weights_BHTS.astype(dtype), v_BSHD)


class FullAttention(SelfAttention):
    """Standard multi-head softmax attention (Vaswani et al. 2017)."""

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        mask_B1TS = attention_mask(
            key_mask_BS, causal=self.causal, q_len=q_BTHD.shape[1], kv_len=k_BSHD.shape[1]
        )
        return dot_product_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            mask_B1TS,
            dropout_rate=self.dropout_rate,
            dropout_key=dropout_key,
        )
