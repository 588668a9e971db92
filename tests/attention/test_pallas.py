"""The Pallas kernels, for GPUs (pallas_gpu.py, Triton) and TPUs (pallas_tpu.py, Mosaic), equal
dense attention, run here in interpret mode: bands, key padding (a hole, a padded tail, an example
with no key), ALiBi, T5's learned table and Shaw's terms (and their gradients), dropout (against
dropout.py's bits; test_dropout.py has their statistics and the paths' agreement), lengths no
block divides, T != S, gradients; the GPU kernel through the attention module at default options;
and each lowers for its platform (Triton for a GPU, Mosaic for a TPU), which CI can check with no
accelerator. On its own platform each kernel runs compiled instead, so on a GPU

    JAX_DEFAULT_MATMUL_PRECISION=highest pytest tests/attention/test_pallas.py

checks the Triton kernels themselves against dense attention (the precision keeps float32 dots,
the kernel's and the reference's, out of TF32).

Each kernel runs at its own tiles: the GPU's 16 x 16 over 37 keys, the TPU's 8 x 128 (its
smallest) over 300 keys, so both have several blocks on each side, runs of several steps (the
full band) and blocks the band leaves empty."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_same_function, build, interpret_unless_on, padding_mask, qkv
from flax import nnx

from research.attention.dispatch import Call, UnusableImplementation, require
from research.attention.dropout import dropout_seed, keep_bits
from research.attention.pallas_gpu import T5Buckets, pallas_gpu_attention
from research.attention.pallas_tpu import pallas_tpu_attention
from research.attention.relative import Shaw, alibi_slopes, t5_bucket
from research.attention.sparsity import Band

Q_LEN = 21  # no block below divides it


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One platform's kernel as the tests run it: the keys' length and the tile; compiled on its
    platform, in interpret mode elsewhere."""

    attention: object
    platform: str
    kv_len: int
    block_q: int
    block_k: int

    def __call__(self, *args, **kwargs):
        interpret = interpret_unless_on(self.platform)
        blocks = dict(block_q=self.block_q, block_k=self.block_k, interpret=interpret)
        return self.attention(*args, **blocks, **kwargs)


KERNELS = {
    "gpu": Kernel(pallas_gpu_attention, "gpu", kv_len=37, block_q=16, block_k=16),
    "tpu": Kernel(pallas_tpu_attention, "tpu", kv_len=300, block_q=8, block_k=128),
}
on_each_kernel = pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS.keys())


def _key_mask(kv_len):
    """Batch 0 all real, 1 with a hole and a padded tail (whole masked blocks), 2 with no key."""
    return padding_mask([kv_len, 30, 0], kv_len).at[1, 4:20].set(False)


def _inputs(kv_len):
    q, _, _ = qkv(0, batch=3, length=Q_LEN, heads=2, dim=12)
    _, k, v = qkv(1, batch=3, length=kv_len, heads=2, dim=12)
    return q, k, v


def _keep(rate, dropout_key, kv_len):
    """dropout.py's keep bits over the whole grid (rows b * heads + h, absolute positions), or
    None without dropout."""
    if not rate:
        return None
    rows = jnp.arange(3 * 2).reshape(3, 2, 1, 1)
    positions = (jnp.arange(Q_LEN)[:, None], jnp.arange(kv_len)[None, :])
    return keep_bits(dropout_seed(dropout_key), rows, *positions, rate)


def _dense(q, k, v, key_mask, band, alibi, keep=None, rate=0.0, bias_HTS=None, shaw_RD=None):
    """Softmax attention written out: the band, padding, ALiBi's -slope |j - i|, a bias or Shaw's
    terms (a^K_r, a^V_r of r = clip(j - i) + clip as T x S x D arrays), and the kernel's own keep
    bits (scaled by 1 / (1 - rate)); rows with no allowed key are zero."""
    t, s = q.shape[1], k.shape[1]
    mask = jnp.asarray(band.dense(t, s))[None, None] & key_mask[:, None, None, :]
    scaled = q / np.sqrt(q.shape[-1])
    logits = jnp.einsum("bthd,bshd->bhts", scaled, k)
    if shaw_RD is not None:
        clip = shaw_RD[0].shape[0] // 2
        index_TS = np.clip(np.arange(s)[None, :] - np.arange(t)[:, None], -clip, clip) + clip
        logits = logits + jnp.einsum("bthd,tsd->bhts", scaled, shaw_RD[0][index_TS])
    if alibi:
        distance = np.abs(np.arange(s)[None, :] - np.arange(t)[:, None])
        logits = logits - alibi_slopes(q.shape[2])[:, None, None] * distance
    if bias_HTS is not None:
        logits = logits + bias_HTS
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jnp.max(logits, -1, keepdims=True)
    weights = jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0))
    total = weights.sum(-1, keepdims=True)
    weights = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)
    if keep is not None:
        weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
    out = jnp.einsum("bhts,bshd->bthd", weights, v)
    if shaw_RD is not None:
        out = out + jnp.einsum("bhts,tsd->bthd", weights, shaw_RD[1][index_TS])
    return out


# (band, ALiBi, dropout rate): every band kind, each with something more.
CASES = {
    "full_alibi_dropout": (Band(), True, 0.3),
    "causal": (Band(causal=True), False, 0.0),
    "window_dropout": (Band(window=5), False, 0.2),
    # Runs of unequal length on the TPU's tiles (query blocks need 1, 2, 2 key blocks; key
    # blocks 3, 2, 0 query blocks): the steps past a short run's end must compute nothing.
    "wide_window_alibi": (Band(window=120), True, 0.0),
    "causal_window_alibi": (Band(window=5, causal=True), True, 0.0),
    "blocks_neighbours_alibi_dropout": (Band(block=8, neighbours=True), True, 0.1),
}


@on_each_kernel
@pytest.mark.parametrize(("band", "alibi", "rate"), CASES.values(), ids=CASES.keys())
def test_equals_dense_with_gradients(kernel, band, alibi, rate):
    q, k, v = _inputs(kernel.kv_len)
    key_mask = _key_mask(kernel.kv_len)
    dropout_key = jax.random.key(7) if rate else None
    keep = _keep(rate, dropout_key, kernel.kv_len)

    def ours(q, k, v):
        return kernel(
            q, k, v, key_mask, band,
            alibi_slopes_H=alibi_slopes(2) if alibi else None,
            dropout_rate=rate, dropout_key=dropout_key,
        )  # fmt: skip

    def theirs(q, k, v):
        return _dense(q, k, v, key_mask, band, alibi, keep, rate)

    assert_same_function(ours, theirs, (q, k, v))


@pytest.mark.parametrize(("name", "options", "causal"), [
    ("local", {"window": 4}, False),
    ("alibi", {}, True),
    ("block_local", {"block_size": 8}, False),
    ("t5", {}, False),
    ("shaw", {}, True),
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


@pytest.mark.parametrize(("band", "bidirectional", "rate"), [
    (Band(window=9), True, 0.2),  # both halves of the buckets, a tile on either side of them
    (Band(causal=True), False, 0.0),
], ids=["window_bidirectional_dropout", "causal"])  # fmt: skip
@on_each_kernel
def test_t5_table_and_its_gradient_equal_dense(kernel, band, bidirectional, rate):
    """T5's bias gathered in-kernel from a table (8 buckets, distances to 6 exact then log-spaced
    to 12, so tiles hold several buckets each), and the table's gradient summed per bucket in the
    dk/dv pass: equal to dense attention with the bias laid out as a T x S array."""
    q, k, v = _inputs(kernel.kv_len)
    key_mask = _key_mask(kernel.kv_len)
    buckets = T5Buckets(num_buckets=8, max_distance=12, bidirectional=bidirectional)
    table = jax.random.normal(jax.random.key(3), (8, 2))
    rel = np.arange(kernel.kv_len)[None, :] - np.arange(Q_LEN)[:, None]
    bucket_TS = t5_bucket(jnp.asarray(rel), num_buckets=8, max_distance=12,
                          bidirectional=bidirectional)  # fmt: skip
    dropout_key = jax.random.key(7) if rate else None
    keep = _keep(rate, dropout_key, kernel.kv_len)

    def ours(q, k, v, table):
        return kernel(q, k, v, key_mask, band, t5_table_NH=table, t5_buckets=buckets,
                      dropout_rate=rate, dropout_key=dropout_key)  # fmt: skip

    def theirs(q, k, v, table):
        bias_HTS = jnp.moveaxis(table[bucket_TS], -1, 0)
        return _dense(q, k, v, key_mask, band, False, keep, rate, bias_HTS=bias_HTS)

    assert_same_function(ours, theirs, (q, k, v, table))


@pytest.mark.parametrize(("band", "rate"), [(Band(window=9), 0.2), (Band(causal=True), 0.0)],
                         ids=["window_dropout", "causal"])  # fmt: skip
@on_each_kernel
def test_shaw_terms_and_their_gradients_equal_dense(kernel, band, rate):
    """Shaw's key term q.a^K_r / sqrt(D) gathered per tile and value term sum_j w_ij a^V_r summed
    per index in-kernel (clip 3, so most tiles hold both clipped ends and the inner indices), with
    dropout on the weights of both v and a^V: equal to the terms written out as T x S arrays, and
    so are the gradients of q, k, v, a^K and a^V."""
    q, k, v = _inputs(kernel.kv_len)
    key_mask = _key_mask(kernel.kv_len)
    key_RD, value_RD = jax.random.normal(jax.random.key(5), (2, 2 * 3 + 1, 12))  # clip 3
    dropout_key = jax.random.key(7) if rate else None
    keep = _keep(rate, dropout_key, kernel.kv_len)

    def ours(q, k, v, key_RD, value_RD):
        return kernel(q, k, v, key_mask, band, shaw_RD=(key_RD, value_RD), dropout_rate=rate,
                      dropout_key=dropout_key)  # fmt: skip

    def theirs(q, k, v, key_RD, value_RD):
        return _dense(q, k, v, key_mask, band, False, keep, rate, shaw_RD=(key_RD, value_RD))

    assert_same_function(ours, theirs, (q, k, v, key_RD, value_RD))


@pytest.mark.parametrize(("backend", "dtype", "valid"), [
    ("gpu", "float64", "f32, bf16, f16"),
    ("tpu", "float16", "f32, bf16"),
])  # fmt: skip
def test_an_unsupported_dtype_is_refused_in_one_line(backend, dtype, valid):
    call = Call(backend=backend, dtype=np.dtype(dtype), head_dim=64, band=Band(),
                position=Shaw, dropout=True, q_len=128, kv_len=128)  # fmt: skip
    with pytest.raises(UnusableImplementation, match=r"^implementation='pallas' is not usable: "
                       rf"dtype {dtype} is not one of {valid}$"):  # fmt: skip
        require("pallas", call)


POSITION_ARGUMENTS = {
    "alibi": dict(alibi_slopes_H=alibi_slopes(4)),
    "t5": dict(t5_table_NH=jnp.ones((32, 4)), t5_buckets=T5Buckets(32, 128, True)),
    "shaw": dict(shaw_RD=(jnp.ones((33, 64)), jnp.ones((33, 64)))),
}


def _lowered_gradient(attention, length, band, position, platform):
    """The text of forward + backward (bf16, B=2, H=4, D=64, padding, dropout 0.1) lowered for
    `platform`."""
    shape = jax.ShapeDtypeStruct((2, length, 4, 64), jnp.bfloat16)

    def loss(q, k, v, key_mask, key):
        out = attention(q, k, v, key_mask, band, **POSITION_ARGUMENTS[position],
                        dropout_rate=0.1, dropout_key=key)  # fmt: skip
        return out.astype(jnp.float32).sum()

    args = (shape, shape, shape, jax.ShapeDtypeStruct((2, length), jnp.bool_),
            jax.eval_shape(lambda: jax.random.key(0)))  # fmt: skip
    gradient = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    return gradient.trace(*args).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("position", POSITION_ARGUMENTS)
def test_lowers_to_triton_for_a_gpu(position):
    """Forward and backward (bf16, a window, ALiBi, T5's table or Shaw's terms, dropout, padding)
    lower to three Triton kernels for CUDA on this CPU-only machine: every op in them has a
    Triton lowering. (Triton's own compile to PTX happens on a GPU.)"""
    text = _lowered_gradient(pallas_gpu_attention, 256, Band(window=32), position, "cuda")
    assert text.count("__gpu$xla.gpu.triton") == 3  # forward, dk/dv, dq
    for name in ("block_sparse_forward", "block_sparse_dkdv", "block_sparse_dq"):
        assert name in text


@pytest.mark.parametrize(("position", "band"), [
    ("alibi", Band(window=128)),
    ("t5", Band(block=128, neighbours=True)),
    ("shaw", Band(causal=True)),
])  # fmt: skip
def test_lowers_to_mosaic_for_a_tpu(position, band, monkeypatch):
    """Forward and backward (as the GPU's test, a band each) lower to three Mosaic kernels for a
    TPU on this CPU-only machine: every op and block shape in them passes Pallas's TPU lowering
    and Mosaic's verifier. The lowering asks the device for its TPU generation; a v5e stands in
    for the CPU here. (Mosaic's layout passes and the compile run on a TPU.)"""
    from jax._src.pallas.mosaic import tpu_info

    v5e = tpu_info.get_tpu_info_for_chip(tpu_info.ChipVersion.TPU_V5E, 1)
    monkeypatch.setitem(tpu_info.registry, jax.devices()[0].device_kind, lambda: v5e)
    text = _lowered_gradient(pallas_tpu_attention, 1024, band, position, "tpu")
    assert text.count("tpu_custom_call") == 3  # forward, dk/dv, dq
    for name in ("block_sparse_forward", "block_sparse_dkdv", "block_sparse_dq"):
        assert name in text
