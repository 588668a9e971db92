"""Boolean attention masks. Convention everywhere: True = the query may attend to the key.

Shapes: `key_mask_BS` marks valid (non-padding) keys; masks returned for attention are `mask_B1TS`,
broadcasting over heads.
"""

import jax.numpy as jnp
from jax import Array


def causal_mask(q_len: int, kv_len: int) -> Array:
    """mask_TS: query i may attend to key j when j <= i."""
    return jnp.arange(kv_len)[None, :] <= jnp.arange(q_len)[:, None]


def attention_mask(
    key_mask_BS: Array | None, *, causal: bool, q_len: int, kv_len: int
) -> Array | None:
    """Combines key padding and causality into mask_B1TS, or None when nothing is masked."""
    mask = None
    if key_mask_BS is not None:
        mask = key_mask_BS[:, None, None, :].astype(bool)
    if causal:
        causal_TS = causal_mask(q_len, kv_len)[None, None]
        mask = causal_TS if mask is None else jnp.logical_and(mask, causal_TS)
    return mask
