"""Sliding-window and block-local attention against dense attention with the same mask."""

import jax
import numpy as np
import pytest
from attention_testing import (
    assert_close,
    assert_same_function,
    band_mask,
    build,
    normal,
    padding_mask,
    qkv,
    reference,
)

from research.attention.dense import positional_attention
from research.attention.sparsity import Band

LENGTH = 13  # not a multiple of any window or block used here
# The kernel in tiles smaller than the length (auto would take the dense path at this length).
KERNEL = {"implementation": "kernel", "block_q": 4, "block_k": 4}


def _attend(module, key_mask):
    return jax.jit(lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 4])
def test_sliding_window_equals_dense_band_mask(window, causal):
    q, k, v = qkv(window, length=LENGTH)
    key_mask = padding_mask([LENGTH, 9], LENGTH)
    ours = _attend(build("local", {"window": window, **KERNEL}, causal=causal), key_mask)
    theirs = lambda q, k, v: reference(q, k, v, band_mask(LENGTH, window, causal), key_mask)
    assert_same_function(ours, theirs, (q, k, v))


def _block_mask(length, block, neighbours, causal):
    block_i = np.arange(length)[:, None] // block
    block_j = np.arange(length)[None, :] // block
    mask = np.abs(block_i - block_j) <= (1 if neighbours else 0)
    return mask & (np.arange(length)[None, :] <= np.arange(length)[:, None]) if causal else mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("neighbours", [False, True])
def test_block_local_equals_dense_block_diagonal_mask(neighbours, causal):
    q, k, v = qkv(7, length=LENGTH)
    key_mask = padding_mask([LENGTH, 10], LENGTH)
    module = build(
        "block_local", {"block_size": 4, "neighbours": neighbours, **KERNEL}, causal=causal
    )
    ours = _attend(module, key_mask)
    pattern = _block_mask(LENGTH, 4, neighbours, causal)
    theirs = lambda q, k, v: reference(q, k, v, pattern, key_mask)
    assert_same_function(ours, theirs, (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_window_at_least_length_equals_full_attention(causal):
    q, k, v = qkv(3, length=LENGTH)
    key_mask = padding_mask([LENGTH, 5], LENGTH)
    local = _attend(build("local", {"window": LENGTH, **KERNEL}, causal=causal), key_mask)
    full = _attend(build("full", causal=causal), key_mask)
    assert_close(local(q, k, v), full(q, k, v))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("position", "causal"),
    [
        ("none", False),
        ("none", True),
        ("rope", False),
        ("alibi", True),
        ("t5", False),
        ("shaw", True),
    ],
)
def test_gradient_outside_the_window_is_exactly_zero(position, causal):
    """Through the whole module (projections and position scheme), output i ignores inputs j with
    |i - j| > w."""
    window, query = 2, 6
    module = build("local", {"window": window, "position": position, **KERNEL}, causal=causal)
    x = normal(0, (1, LENGTH, 16))
    grad = jax.jit(jax.grad(lambda x: module(x)[0, query].sum()))(x)
    touched = np.abs(np.asarray(grad[0])).sum(-1) > 0
    lo, hi = query - window, query if causal else query + window
    assert touched[lo : hi + 1].all()
    assert not touched[:lo].any() and not touched[hi + 1 :].any()


@pytest.mark.parametrize("position", ["rope", "alibi", "t5", "shaw"])
@pytest.mark.parametrize("variant", ["local", "block_local"])
def test_position_schemes_in_blocks_equal_the_dense_layout(variant, position):
    """The kernel gives what dense attention gives with the same scheme and band mask."""
    causal = position == "alibi"
    q, k, v = qkv(4, length=LENGTH)
    key_mask = padding_mask([LENGTH, 8], LENGTH)
    options = {"window": 3} if variant == "local" else {"block_size": 4, "neighbours": True}
    module = build(variant, {**options, "position": position, **KERNEL}, causal=causal)
    if variant == "local":
        pattern = band_mask(LENGTH, 3, causal)
    else:
        pattern = _block_mask(LENGTH, 4, True, causal)

    def dense(q, k, v):
        q, k = module.position.rotate(q, k)
        mask = Band().mask(key_mask, LENGTH, LENGTH) & pattern
        return positional_attention(
            q, k, v, mask, module.position, 0, dropout_rate=0.0, dropout_key=None
        )

    assert_close(_attend(module, key_mask)(q, k, v), jax.jit(dense)(q, k, v))
