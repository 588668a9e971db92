"""The Pallas GPU kernel (pallas_gpu.py) equals dense attention, run here in interpret mode:
bands, key padding (a hole, a padded tail, an example with no key), ALiBi, dropout (against
dropout.py's bits; test_dropout.py has their statistics and the paths' agreement), lengths no
block divides, T != S, gradients; through the attention module at default options; and it lowers
to Triton for a GPU (all three kernels), which CI can check with no GPU."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_same_function, build, padding_mask, qkv
from flax import nnx

from research.attention.dropout import dropout_seed, keep_bits
from research.attention.pallas_gpu import pallas_gpu_attention
from research.attention.relative import alibi_slopes
from research.attention.sparsity import Band
from research.errors import UserError

Q_LEN, KV_LEN = 21, 37  # no block below divides either


def _key_mask():
    """Batch 0 all real, 1 with a hole and a padded tail (whole masked blocks), 2 with no key."""
    return padding_mask([KV_LEN, 30, 0], KV_LEN).at[1, 4:20].set(False)


def _inputs():
    q, _, _ = qkv(0, batch=3, length=Q_LEN, heads=2, dim=12)
    _, k, v = qkv(1, batch=3, length=KV_LEN, heads=2, dim=12)
    return q, k, v


def _dense(q, k, v, key_mask, band, alibi, keep=None, rate=0.0):
    """Softmax attention written out: the band, padding, ALiBi's -slope |j - i| and the kernel's
    own keep bits (scaled by 1 / (1 - rate)); rows with no allowed key are zero."""
    t, s = q.shape[1], k.shape[1]
    mask = jnp.asarray(band.dense(t, s))[None, None] & key_mask[:, None, None, :]
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    if alibi:
        distance = np.abs(np.arange(s)[None, :] - np.arange(t)[:, None])
        logits = logits - alibi_slopes(q.shape[2])[:, None, None] * distance
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jnp.max(logits, -1, keepdims=True)
    weights = jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0))
    total = weights.sum(-1, keepdims=True)
    weights = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)
    if keep is not None:
        weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


# (band, ALiBi, dropout rate, block_q, block_k): every band kind, each with something more.
CASES = {
    "full_alibi_dropout": (Band(), True, 0.3, 16, 32),
    "causal": (Band(causal=True), False, 0.0, 16, 16),
    "window_dropout": (Band(window=5), False, 0.2, 16, 16),
    "causal_window_alibi": (Band(window=5, causal=True), True, 0.0, 16, 16),
    "blocks_neighbours_alibi_dropout": (Band(block=8, neighbours=True), True, 0.1, 16, 16),
}


@pytest.mark.parametrize(("band", "alibi", "rate", "block_q", "block_k"), CASES.values(),
                         ids=CASES.keys())  # fmt: skip
def test_equals_dense_with_gradients(band, alibi, rate, block_q, block_k):
    q, k, v = _inputs()
    key_mask = _key_mask()
    dropout_key = jax.random.key(7) if rate else None
    keep = None
    if rate:  # dropout.py's bits over the whole grid: rows b * heads + h, absolute positions
        rows = jnp.arange(3 * 2).reshape(3, 2, 1, 1)
        positions = (jnp.arange(Q_LEN)[:, None], jnp.arange(KV_LEN)[None, :])
        keep = keep_bits(dropout_seed(dropout_key), rows, *positions, rate)

    def ours(q, k, v):
        return pallas_gpu_attention(
            q, k, v, key_mask, band,
            alibi_slopes_H=alibi_slopes(2) if alibi else None,
            dropout_rate=rate, dropout_key=dropout_key,
            block_q=block_q, block_k=block_k, interpret=True,
        )  # fmt: skip

    def theirs(q, k, v):
        return _dense(q, k, v, key_mask, band, alibi, keep, rate)

    assert_same_function(ours, theirs, (q, k, v))


@pytest.mark.parametrize(("name", "options", "causal"), [
    ("local", {"window": 4}, False),
    ("alibi", {}, True),
    ("block_local", {"block_size": 8}, False),
])  # fmt: skip
def test_through_the_module_at_default_tiles(name, options, causal):
    """The module on `implementation="pallas"` (default tiles) equals the same module on the dense
    path: output and the gradients of q, k, v."""
    pallas = build(name, {**options, "implementation": "pallas"}, causal=causal)
    dense = nnx.clone(pallas)
    dense.options = dataclasses.replace(dense.options, implementation="dense")
    q, k, v = qkv(4, length=70)
    key_mask = padding_mask([70, 45], 70)

    def attend(module):
        return lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None)

    assert_same_function(attend(pallas), attend(dense), (q, k, v))


def test_learned_position_tables_are_refused_in_one_line():
    module = build("t5", {"implementation": "pallas"})
    q, k, v = qkv(0)
    with pytest.raises(UserError, match=r"t5\.implementation='pallas' is not usable: a learned"):
        module.attend(q, k, v, None, dropout_key=None)


def test_lowers_to_triton_for_a_gpu():
    """Forward and backward (bf16, a window, ALiBi, dropout, padding) lower to three Triton
    kernels for CUDA on this CPU-only machine: every op in them has a Triton lowering. (Triton's
    own compile to PTX happens on a GPU.)"""
    shape = jax.ShapeDtypeStruct((2, 256, 4, 64), jnp.bfloat16)

    def loss(q, k, v, key_mask, key):
        out = pallas_gpu_attention(q, k, v, key_mask, Band(window=32),
                                   alibi_slopes_H=alibi_slopes(4), dropout_rate=0.1,
                                   dropout_key=key)  # fmt: skip
        return out.astype(jnp.float32).sum()

    args = (shape, shape, shape, jax.ShapeDtypeStruct((2, 256), jnp.bool_),
            jax.eval_shape(lambda: jax.random.key(0)))  # fmt: skip
    lowered = (
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(*args).lower(lowering_platforms=("cuda",))
    )
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 3  # forward, dk/dv, dq
    for name in ("block_sparse_forward", "block_sparse_dkdv", "block_sparse_dq"):
        assert name in text
