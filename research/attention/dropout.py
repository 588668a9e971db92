"""Attention dropout's keep bits, one definition for every softmax path.

Whether the weight of (query i, key j) in row r (= batch x heads + head) is kept is a hash of
(seed, r, i, j), with the seed drawn once from the layer's dropout key. The dense path draws it
over the whole (T, S) grid, the block-sparse kernel (kernel.py) and the Pallas kernels
(pallas_gpu.py, pallas_tpu.py) per tile, from the tile's positions, in the forward and the
backward pass alike: so no path stores a T x S mask, and every path drops the same weights for
the same key, whatever its tiles (tested: dense, kernel and Pallas outputs under dropout are
equal).

The hash is murmur3's 32-bit finaliser chained over the row, query and key: a handful of integer
operations per weight (threefry, which `jax.random.bernoulli` runs, is several times that), that
Triton and Mosaic lower as they do any integer arithmetic. A weight is kept when its 32 bits are
at least rate x 2^32, so the keep rate is 1 - rate to 2^-32.
"""

import math

import jax
import jax.numpy as jnp
from jax import Array


def dropout_seed(dropout_key: Array) -> Array:
    """seed_1 (uint32): the one draw from a layer's dropout key that its keep bits hash."""
    return jax.random.bits(dropout_key, (1,), jnp.uint32)


def _mix(x: Array) -> Array:
    """murmur3's 32-bit finaliser: every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def keep_bits(seed: Array, row: Array, q_pos: Array, k_pos: Array, rate: float) -> Array:
    """True where a weight is kept (shapes broadcast): hash(seed, row, q, k) >= rate * 2^32.
    `seed` a uint32 scalar or size-1 array; row, q_pos and k_pos integer arrays."""
    if jnp.ndim(seed):  # a size-1 array (reshaping a scalar would not lower for a TPU)
        seed = jnp.reshape(seed, ())
    seed = seed.astype(jnp.uint32)
    per_row = _mix(seed ^ _mix(row.astype(jnp.uint32) + jnp.uint32(0x9E3779B9)))
    per_query = _mix(per_row ^ (q_pos.astype(jnp.uint32) * jnp.uint32(0x27D4EB2F)))
    bits = _mix(per_query + k_pos.astype(jnp.uint32) * jnp.uint32(0x165667B1))
    return bits >= jnp.uint32(min(int(rate * 2**32), 2**32 - 1))


def scale_kept(x: Array, keep: Array, rate: float) -> Array:
    """x / (1 - rate) where `keep`, else 0: dropout applied to weights (or to their gradient)."""
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def drop_with_gradient(p, dp, seed, row, q_pos, k_pos, rate: float):
    """(p, dp) of a tile, its weights and their gradient, with the keep bits of (seed, row,
    q_pos, k_pos) applied to both, as a flash kernel's backward passes need them; unchanged
    without dropout (rate 0)."""
    if rate == 0.0:
        return p, dp
    keep = keep_bits(seed, row, q_pos, k_pos, rate)
    return scale_kept(p, keep, rate), scale_kept(dp, keep, rate)


def drop_weights(weights_XHTS: Array, rate: float, dropout_key: Array | None) -> Array:
    """Dense weights (any leading shape X, then heads, queries, keys) with dropout applied:
    dropped weights 0, kept ones scaled by 1 / (1 - rate); the rows are X x heads in order."""
    if dropout_key is None or rate <= 0.0:
        return weights_XHTS
    *lead, heads, q_len, kv_len = weights_XHTS.shape
    rows = jnp.arange(math.prod(lead) * heads).reshape(*lead, heads, 1, 1)
    keep = keep_bits(
        dropout_seed(dropout_key),
        rows,
        jnp.arange(q_len)[:, None],
        jnp.arange(kv_len)[None, :],
        rate,
    )
    return scale_kept(weights_XHTS, keep, rate)
