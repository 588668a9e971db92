"""Shared inputs and oracles for the attention tests (imported by the test modules beside it)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.attention import make_attention

ATOL = 2e-5


def normal(seed: int, shape) -> jax.Array:
    """Gaussian test data from numpy (no PRNG kernel to compile)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def qkv(seed: int, batch: int = 2, length: int = 11, heads: int = 2, dim: int = 8):
    """Random q_BTHD, k_BTHD, v_BTHD."""
    return tuple(normal(seed * 3 + i, (batch, length, heads, dim)) for i in range(3))


def padding_mask(lengths, length: int):
    """key_mask_BT, True for the first lengths[b] positions."""
    return jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]


def interpret_unless_on(platform: str) -> bool:
    """Pallas's interpret mode everywhere but on the kernel's own platform ("gpu", "tpu"), where
    the same test checks the compiled kernel. Run there with JAX_DEFAULT_MATMUL_PRECISION=highest:
    float32 matmuls (the dense references', and the kernel's own dots) are TF32 otherwise."""
    return jax.default_backend() != platform


def build(name: str, options=None, *, heads: int = 2, dim: int = 8, causal=False, seed=0):
    """Variant `name` with in_features = heads * dim, so attend() takes (B, T, heads, dim)."""
    return make_attention(
        name,
        options or {},
        in_features=heads * dim,
        num_heads=heads,
        causal=causal,
        rngs=nnx.Rngs(seed),
    )


def reference(q, k, v, mask_TS=None, key_mask_BS=None, bias_BHTS=None):
    """jax.nn.dot_product_attention (XLA) with a (T, S) pattern and key padding combined; rows with
    no allowed key are zeroed, our convention (jax averages them uniformly)."""
    batch, length = q.shape[0], q.shape[1]
    mask = jnp.ones((batch, 1, length, k.shape[1]), bool)
    if mask_TS is not None:
        mask = mask & mask_TS
    if key_mask_BS is not None:
        mask = mask & key_mask_BS[:, None, None, :]
    out = jax.nn.dot_product_attention(q, k, v, bias=bias_BHTS, mask=mask)
    return jnp.where(mask.any(-1)[:, 0, :, None, None], out, 0.0)


def band_mask(length: int, window: int, causal: bool) -> np.ndarray:
    """mask_TS of a sliding window: |i - j| <= window, and j <= i when causal."""
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    mask = np.abs(i - j) <= window
    return mask & (j <= i) if causal else mask


def output_and_grads(fn, args, cotangent_seed: int = 99):
    """fn(*args) and the gradients of <fn(*args), c> for a fixed random cotangent c w.r.t. every
    arg, compiled once."""

    cotangent = normal(cotangent_seed, jax.eval_shape(fn, *args).shape)

    @jax.jit
    def run(*args):
        out, pullback = jax.vjp(fn, *args)
        return out, pullback(cotangent)

    return run(*args)


def assert_same_function(ours, theirs, args, atol: float = ATOL):
    """Equal outputs and equal gradients (through a random cotangent) w.r.t. every arg."""
    (out, grads), (want_out, want_grads) = (
        output_and_grads(ours, args),
        output_and_grads(theirs, args),
    )
    assert_close(out, want_out, atol)
    for got, want in zip(grads, want_grads, strict=True):
        assert_close(got, want, atol)


def assert_close(actual, expected, atol: float = ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=1e-4)
