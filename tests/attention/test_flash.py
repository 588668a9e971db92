"""The flash path of full attention (custom backward pass) equals dense attention."""

import jax
import jax.numpy as jnp
import pytest
from attention_testing import assert_same_function, build, padding_mask, qkv, reference

from research.attention.flash import flash_attention
from research.attention.masks import causal_mask


@pytest.mark.parametrize(
    ("causal", "block_q", "block_k", "heads_per_step"),
    [(False, 4, 4, 1), (True, 8, 4, 2), (True, 4, 8, 6), (False, 64, 64, 1)],
)
def test_equals_reference_with_ragged_length_and_masked_blocks(
    causal, block_q, block_k, heads_per_step
):
    """Forward and gradients for lengths the blocks do not divide, a fully masked key block and a
    sequence with no valid key (zero output, zero gradient)."""
    q, k, v = qkv(0, batch=3, length=13)
    key_mask = padding_mask([13, 11, 0], 13).at[1, 4:8].set(False)
    mask_TS = causal_mask(13, 13)[None, None] if causal else None

    def ours(q, k, v):
        return flash_attention(
            q,
            k,
            v,
            key_mask,
            causal=causal,
            block_q=block_q,
            block_k=block_k,
            heads_per_step=heads_per_step,
        )

    want = lambda q, k, v: reference(q, k, v, mask_TS, key_mask)
    assert_same_function(ours, want, (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_without_key_mask(causal):
    q, k, v = qkv(1, length=10)
    mask_TS = causal_mask(10, 10)[None, None] if causal else None
    ours = lambda q, k, v: flash_attention(q, k, v, None, causal=causal, block_q=4, block_k=3)
    assert_same_function(ours, lambda q, k, v: reference(q, k, v, mask_TS), (q, k, v))


def test_fully_masked_rows_are_zero_and_finite():
    q, k, v = qkv(2, batch=2, length=9)
    key_mask = jnp.zeros((2, 9), bool)
    fn = lambda q, k, v: flash_attention(q, k, v, key_mask, causal=True, block_q=4, block_k=4)
    out, grads = jax.value_and_grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1, 2))(q, k, v)
    assert float(out) == 0.0
    for grad in grads:
        assert bool(jnp.all(grad == 0.0))


@pytest.mark.parametrize("position", ["none", "rope"])
def test_module_chunked_path_equals_dense(position):
    """FullAttention(implementation="chunked") routes none and rope through the flash path."""
    q, k, v = qkv(3, batch=2, length=11)
    key_mask = padding_mask([11, 5], 11)
    options = {"position": position, "chunk_size": 4}
    dense = build("full", {**options, "implementation": "dense"}, causal=True)
    chunked = build("full", {**options, "implementation": "chunked"}, causal=True)
    ours = lambda q, k, v: chunked.attend(q, k, v, key_mask, dropout_key=None)
    want = lambda q, k, v: dense.attend(q, k, v, key_mask, dropout_key=None)
    assert_same_function(ours, want, (q, k, v))
