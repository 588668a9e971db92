"""Attention dropout's keep bits (dropout.py): their rate and independence, replay from the key,
and the same weights dropped on every softmax path (dense, the block-sparse kernel, the Pallas
GPU and TPU kernels in interpret mode), outputs and gradients alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_same_function, interpret_unless_on, padding_mask, qkv

from research.attention.dispatch import dense_attention
from research.attention.dropout import drop_weights, dropout_seed, keep_bits
from research.attention.kernel import block_sparse_attention
from research.attention.pallas_gpu import pallas_gpu_attention
from research.attention.pallas_tpu import pallas_tpu_attention
from research.attention.relative import Position
from research.attention.sparsity import Band


def test_keep_rate_and_independence():
    """A fraction 1 - rate kept over a million bits (binomial sd 0.0003), no correlation between
    heads, neighbouring queries or neighbouring keys."""
    rows = jnp.arange(16).reshape(4, 4, 1, 1)
    positions = (jnp.arange(256)[:, None], jnp.arange(256)[None, :])
    keep = np.asarray(keep_bits(dropout_seed(jax.random.key(0)), rows, *positions, 0.1))
    assert abs(keep.mean() - 0.9) < 0.002
    for a, b in [(keep[0, 0], keep[0, 1]), (keep[0, 0, :-1], keep[0, 0, 1:]),
                 (keep[0, 0, :, :-1], keep[0, 0, :, 1:])]:  # fmt: skip
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01


def test_the_same_key_drops_the_same_weights_another_key_others():
    weights = jnp.ones((2, 3, 8, 8))
    first, again = (drop_weights(weights, 0.5, jax.random.key(0)) for _ in range(2))
    other = drop_weights(weights, 0.5, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert set(np.unique(np.asarray(first))) == {0.0, 2.0}  # kept weights scaled by 1 / (1 - p)


@pytest.mark.parametrize("band", [Band(), Band(window=3, causal=True)], ids=["full", "window"])
def test_every_path_drops_the_same_weights(band):
    """Dense, the kernel (tiles no length divides) and the Pallas kernels, with the same dropout
    key: equal outputs and gradients, so switching implementations never changes a run's
    dropout."""
    q, k, v = qkv(5, batch=2, length=19)
    key_mask = padding_mask([19, 12], 19)
    key, rate = jax.random.key(3), 0.3

    def dense(q, k, v):
        return dense_attention(q, k, v, key_mask, band, position=Position(),
                               dropout_rate=rate, dropout_key=key)  # fmt: skip

    def kernel(q, k, v):
        return block_sparse_attention(q, k, v, key_mask, band, block_q=8, block_k=4,
                                      dropout_rate=rate, dropout_key=key)  # fmt: skip

    def pallas(attention, platform):
        interpret = interpret_unless_on(platform)
        return lambda q, k, v: attention(q, k, v, key_mask, band, dropout_rate=rate,
                                         dropout_key=key, interpret=interpret)  # fmt: skip

    assert_same_function(kernel, dense, (q, k, v))
    assert_same_function(pallas(pallas_gpu_attention, "gpu"), dense, (q, k, v))
    assert_same_function(pallas(pallas_tpu_attention, "tpu"), dense, (q, k, v))
