"""The block-sparse flash kernel equals dense attention: every band, position scheme, padding,
causality, lengths the blocks do not divide, gradients (parameters too) and dropout."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_close, assert_same_function, build, padding_mask, qkv
from flax import nnx
from jax.test_util import check_grads

from research.attention.kernel import block_sparse_attention
from research.attention.sparsity import Band

LENGTH = 13  # no block below divides it
BANDS = {
    "full": Band(),
    "causal": Band(causal=True),
    "window": Band(window=3),
    "causal_window": Band(window=3, causal=True),
    "blocks": Band(block=4),
    "blocks_neighbours": Band(block=4, neighbours=True),
    "causal_blocks_neighbours": Band(block=4, neighbours=True, causal=True),
}
# Variant -> options that narrow its band to what this length exercises.
VARIANTS = {
    "full": {},
    "local": {"window": 3},
    "block_local": {"block_size": 4, "neighbours": True},
    "rope": {},
    "alibi": {},
    "t5": {"t5_num_buckets": 8, "t5_max_distance": 6},
    "shaw": {"shaw_clip": 2},
}


def _key_mask():
    """Batch 0 full, 1 with a hole and a padded tail (a whole masked block), 2 with no key."""
    return padding_mask([LENGTH, 11, 0], LENGTH).at[1, 4:8].set(False)


def _reference(q, k, v, key_mask, band):
    mask = jnp.asarray(band.dense(q.shape[1], k.shape[1]))[None, None] & key_mask[:, None, None]
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return jnp.where(mask.any(-1)[:, 0, :, None, None], out, 0.0)


@pytest.mark.parametrize("band", BANDS.values(), ids=BANDS.keys())
@pytest.mark.parametrize(("block_q", "block_k", "rows"), [(4, 8, 1), (8, 4, 2), (5, 3, 6)])
def test_every_band_equals_dense(band, block_q, block_k, rows):
    q, k, v = qkv(0, batch=3, length=LENGTH)
    key_mask = _key_mask()

    def ours(q, k, v):
        return block_sparse_attention(
            q, k, v, key_mask, band, block_q=block_q, block_k=block_k, rows_per_step=rows
        )

    assert_same_function(ours, lambda q, k, v: _reference(q, k, v, key_mask, band), (q, k, v))


@pytest.mark.parametrize("band", [Band(), Band(causal=True)], ids=["full", "causal"])
def test_tiles_of_padding_alone_are_skipped(band):
    """A tile whose keys are all padding for every row of its step is not computed, in either
    pass: NaN keys and values there (never read) leave the output and gradients equal to the
    dense reference's on zeros. Batch 0 is real up to 6 (its 8-key tile at 8 is padding alone),
    batch 1 up to 16. (A tile mixing real and padded keys is computed: NaN there would show.)"""
    q, k, v = qkv(2, batch=2, length=16)
    key_mask = padding_mask([6, 16], 16)
    alone = jnp.zeros((2, 16), bool).at[0, 8:].set(True)[:, :, None, None]
    k_nan, v_nan = jnp.where(alone, jnp.nan, k), jnp.where(alone, jnp.nan, v)

    def ours(q, k, v):
        k, v = k + jnp.where(alone, k_nan, 0.0), v + jnp.where(alone, v_nan, 0.0)
        return block_sparse_attention(
            q, k, v, key_mask, band, block_q=4, block_k=8, rows_per_step=1
        )

    def theirs(q, k, v):
        return _reference(q, k, v, key_mask, band)

    assert_same_function(ours, theirs, (q, k, v))


def test_without_key_mask_and_blocks_longer_than_the_sequence():
    q, k, v = qkv(1, length=10)
    everything = jnp.ones((2, 10), bool)
    for band in (Band(), Band(causal=True)):
        ours = lambda q, k, v, b=band: block_sparse_attention(q, k, v, None, b)  # noqa: E731
        want = lambda q, k, v, b=band: _reference(q, k, v, everything, b)  # noqa: E731
        assert_same_function(ours, want, (q, k, v))


def _kernel_and_dense(name, causal, options):
    """The same module (same parameters) on the kernel and on the dense reference path."""
    kernel = build(name, {**options, "implementation": "kernel"}, causal=causal)
    dense = nnx.clone(kernel)
    dense.options = dataclasses.replace(dense.options, implementation="dense")
    return kernel, dense


def _loss_and_grads(module, q, k, v, key_mask):
    """A scalar of the output and its gradients w.r.t. q, k, v and the module's parameters."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def loss(params, q, k, v):
        out = nnx.merge(graphdef, params, rest).attend(q, k, v, key_mask, dropout_key=None)
        return jnp.sum(out * jnp.sin(jnp.arange(out.size).reshape(out.shape)))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(params, q, k, v)


# Every variant in tiles wider than tall; the schemes with per-tile tables also taller than wide.
TILE_CASES = [(name, 4, 8) for name in VARIANTS] + [("t5", 8, 4), ("shaw", 8, 4)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "block_q", "block_k"), TILE_CASES)
def test_every_softmax_variant_on_the_kernel_equals_its_dense_path(name, causal, block_q, block_k):
    """Position terms per tile (ALiBi, T5 and Shaw at traced tile offsets, both tile shapes) with
    the gradients of their tables, band and padding masks together."""
    q, k, v = qkv(2, batch=3, length=LENGTH)
    options = {**VARIANTS[name], "block_q": block_q, "block_k": block_k}
    kernel, dense = _kernel_and_dense(name, causal, options)
    got_value, got_grads = _loss_and_grads(kernel, q, k, v, _key_mask())
    want_value, want_grads = _loss_and_grads(dense, q, k, v, _key_mask())
    assert_close(got_value, want_value, atol=1e-4)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        assert_close(got, want, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_default_options_choose_the_kernel_and_equal_dense(name):
    """At the defaults (auto, default blocks and schemes, local's window 32) a length past the
    dense threshold runs the kernel on CPU, several tiles for the banded variants."""
    length = 300
    q, k, v = qkv(3, batch=1, length=length, heads=2, dim=8)
    key_mask = padding_mask([250], length)
    auto = build(name, {}, causal=name == "rope")
    dense = nnx.clone(auto)
    dense.options = dataclasses.replace(dense.options, implementation="dense")
    got_value, got_grads = _loss_and_grads(auto, q, k, v, key_mask)
    want_value, want_grads = _loss_and_grads(dense, q, k, v, key_mask)
    assert_close(got_value, want_value, atol=1e-3)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        assert_close(got, want, atol=1e-4)


def _dropped_weights(band, rate, key, length=12):
    """The weights the kernel mixes values by under dropout, read off by taking v = identity
    (D = S), beside the dense weights without dropout."""
    q, k, _ = qkv(4, batch=1, length=length, heads=1, dim=length)
    v = jnp.eye(length)[None, :, None, :]
    out = block_sparse_attention(
        q, k, v, None, band, block_q=4, block_k=4, dropout_rate=rate, dropout_key=key
    )
    plain = block_sparse_attention(q, k, v, None, band, block_q=4, block_k=4)
    return np.asarray(out[0, :, 0]), np.asarray(plain[0, :, 0])


def test_dropout_keeps_or_zeroes_each_weight_and_rescales():
    """Each weight is either dropped or divided by 1 - rate, the normaliser is the undropped one,
    masks differ per tile and per key but repeat for the same key (forward = backward)."""
    rate = 0.3
    dropped, plain = _dropped_weights(Band(causal=True), rate, jax.random.key(0))
    allowed = plain > 0
    kept = np.isclose(dropped, plain / (1 - rate), atol=1e-6) & allowed
    zeroed = (dropped == 0) & allowed
    assert np.all(kept | zeroed | ~allowed)
    assert np.all(dropped[~allowed] == 0)
    assert 0.15 < zeroed.sum() / allowed.sum() < 0.45
    again, _ = _dropped_weights(Band(causal=True), rate, jax.random.key(0))
    other, _ = _dropped_weights(Band(causal=True), rate, jax.random.key(1))
    np.testing.assert_array_equal(again, dropped)
    assert not np.array_equal(other, dropped)


def test_dropout_gradients_match_finite_differences():
    """The backward pass regenerates the forward pass's keep-masks per tile."""
    q, k, v = qkv(5, batch=1, length=9, heads=1, dim=4)
    key = jax.random.key(3)

    def fn(q, k, v):
        return block_sparse_attention(
            q, k, v, None, Band(window=4), block_q=4, block_k=4, dropout_rate=0.4, dropout_key=key
        )

    check_grads(fn, (q, k, v), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)
