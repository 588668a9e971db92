"""Oracles for `SelfAttention.weights`, the dense matrix each variant's attention maps draw.

For every registered variant, causal and not, with padded keys: weights @ v equals `attend`'s
output (for Shaw, plus its relative value term), rows sum to 1 over the keys a query may see, and
every key it may not see (padding, a later position when causal, outside a local band or block)
has weight exactly 0. Run at each variant's defaults, and at small options that send `attend` down
its other paths (flash and chunked full attention, several local windows and blocks).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_close, build, normal, padding_mask
from flax import nnx

from research.attention import ATTENTION

# At the defaults (local window 32, block_local blocks of 64) this length spans several windows and
# two ragged blocks, so the band and the block boundaries show; it is past one causal chunk (64 +
# 2MD/(M + D), linear.one_chunk_or), so the causal linear and Performer scans run two chunks.
DEFAULT_LENGTH = 90
# Options that send `attend` down its other paths (the defaults already run the causal linear and
# Performer scans over two chunks): the kernel in several tiles for full, with a value term for
# Shaw, with a bias for local windows and with RoPE for neighbouring blocks.
SMALL = {
    "full": {"implementation": "kernel", "block_q": 4, "block_k": 4},
    "shaw": {"implementation": "kernel", "block_q": 4, "block_k": 4, "shaw_clip": 2},
    "local": {
        "window": 2,
        "position": "t5",
        "implementation": "kernel",
        "block_q": 4,
        "block_k": 4,
    },
    "block_local": {
        "block_size": 4,
        "neighbours": True,
        "position": "rope",
        "implementation": "kernel",
    },
}
SMALL_LENGTH = 11
HEADS, DIM = 2, 8


def reach_TS(module, length: int) -> np.ndarray:
    """bool (T, S): the keys each query may see by position alone, from the variant's options."""
    t, s = np.arange(length)[:, None], np.arange(length)[None, :]
    allowed = np.ones((length, length), bool)
    if module.causal:
        allowed &= s <= t
    options = getattr(module, "options", None)
    if hasattr(options, "window"):
        allowed &= np.abs(t - s) <= options.window
    if hasattr(options, "block_size"):
        block_t, block_s = t // options.block_size, s // options.block_size
        reach = 1 if options.neighbours else 0
        allowed &= np.abs(block_t - block_s) <= reach
    return allowed


def value_term(module, weights_BHTS):
    """What a variant adds to weights @ v: Shaw's relative values (full and local alike, as both
    score with the same position hooks), nothing for the rest."""
    position = getattr(module, "position", None)
    if position is None or not position.adds_value:
        return 0.0
    return position.value_term(weights_BHTS, 0)


def check_weights(module, length: int):
    """The oracles of the module docstring for one built module."""
    lengths = [length, length - 6, 0]  # full, padded, and a row with no valid key at all
    q, k, v = (normal(10 + i, (len(lengths), length, HEADS, DIM)) for i in range(3))
    key_mask_BS = padding_mask(lengths, length)

    @nnx.jit  # one compiled call: op-by-op dispatch would dominate these small shapes
    def run(module, q, k, v):
        weights = module.weights(q, k, key_mask_BS)
        out = module.attend(q, k, v, key_mask_BS, dropout_key=None)
        mixed = jnp.einsum("bhts,bshd->bthd", weights, v) + value_term(module, weights)
        return weights, out, mixed

    weights, out, mixed = run(module, q, k, v)
    assert weights.shape == (len(lengths), HEADS, length, length)
    assert weights.dtype == jnp.float32
    assert_close(mixed, out, atol=5e-5)

    w = np.asarray(weights)
    allowed_BTS = reach_TS(module, length)[None] & np.asarray(key_mask_BS)[:, None, :]
    assert (w[np.broadcast_to(~allowed_BTS[:, None], w.shape)] == 0).all()
    assert (w >= 0).all()
    sees_any_BT = allowed_BTS.any(-1)
    expected_rows = np.broadcast_to(sees_any_BT[:, None], w.shape[:3]).astype(np.float32)
    np.testing.assert_allclose(w.sum(-1), expected_rows, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_weights_at_defaults(name, causal):
    check_weights(build(name, {}, heads=HEADS, dim=DIM, causal=causal), DEFAULT_LENGTH)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_weights_on_other_paths(name, causal):
    check_weights(build(name, SMALL[name], heads=HEADS, dim=DIM, causal=causal), SMALL_LENGTH)


def test_band_is_visible():
    """The reach mask above is not vacuous: at the defaults and DEFAULT_LENGTH, local and
    block_local leave keys out that full attention weighs."""
    for name in ("local", "block_local"):
        module = build(name, {}, heads=HEADS, dim=DIM)
        assert not reach_TS(module, DEFAULT_LENGTH).all()


def test_performer_weights_use_the_stored_features():
    """Redrawing the module's projection changes its weights: they come from the stored draw."""
    module = build("performer", {"num_features": 16}, heads=HEADS, dim=DIM)
    q, k = normal(1, (1, 9, HEADS, DIM)), normal(2, (1, 9, HEADS, DIM))
    before = module.weights(q, k, None)
    module.projection[...] = module.draw(jnp.asarray(np.array([0, 7], np.uint32)))
    assert not np.allclose(before, module.weights(q, k, None))
