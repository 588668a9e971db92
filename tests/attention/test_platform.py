"""Platform kernels (research/attention/platform.py) against the dense reference.

Splash runs in Pallas interpret mode off a TPU (slow: a few seconds per compile, so shapes are
small), compiled on a TPU.
cuDNN needs a GPU: there the cuDNN tests run cuDNN itself (in bfloat16, which it requires);
elsewhere they run the same `jax.nn.dot_product_attention` call with implementation="xla", which
checks our translation (band, key padding, bias), and the arguments it would hand cuDNN are checked
against what jax's cuDNN path accepts. On a GPU run them with JAX_DEFAULT_MATMUL_PRECISION=highest,
so that the float32 reference is not computed in TF32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import (
    ATOL,
    assert_close,
    assert_same_function,
    interpret_unless_on,
    normal,
    padding_mask,
    qkv,
    reference,
)
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from research.attention.platform import (
    cudnn_attention,
    cudnn_eligible,
    splash_attention,
    splash_eligible,
)
from research.attention.sparsity import Band

BANDS = [
    Band(),
    Band(causal=True),
    Band(window=5),
    Band(causal=True, window=5),
    Band(block=32),
    Band(block=32, neighbours=True),
    Band(causal=True, block=48, neighbours=True),
]
SMALL_BLOCKS = splash.BlockSizes(*([128] * 8))
ON_GPU = jax.default_backend() == "gpu"
# cuDNN itself on a GPU (bfloat16 in and out: about 3 significant digits), else its XLA twin.
CUDNN_IMPLEMENTATION, CUDNN_DTYPE, CUDNN_ATOL = (
    ("cudnn", jnp.bfloat16, 4e-2) if ON_GPU else ("xla", jnp.float32, ATOL)
)


def band_reference(band: Band, key_mask_BS=None, bias_BHTS=None):
    def attend(q, k, v):
        mask_TS = jnp.asarray(band.dense(q.shape[1], k.shape[1]))
        return reference(q, k, v, mask_TS, key_mask_BS, bias_BHTS)

    return attend


def scattered_key_mask(length: int):
    """key_mask_BS: example 0 drops every 7th key (key 0 too, so a causal query 0 sees nothing)
    and its last 50; example 1 is all padding."""
    j = np.arange(length)
    return jnp.asarray(np.stack([(j % 7 != 0) & (j < length - 50), np.zeros(length, bool)]))


# Splash (interpret mode) ------------------------------------------------------------------------


@pytest.mark.parametrize("band", BANDS, ids=str)
def test_splash_matches_reference_with_padding(band):
    """300 keys in 128-blocks: three blocks per axis (tiles skipped, padded to 384), scattered
    padding, a fully padded example, forward and gradients."""
    q, k, v = qkv(0, batch=2, length=300, heads=2, dim=8)
    key_mask = scattered_key_mask(300)

    def ours(q, k, v):
        return splash_attention(
            q, k, v, key_mask, band, interpret=interpret_unless_on("tpu"), block_sizes=SMALL_BLOCKS
        )

    assert_same_function(ours, band_reference(band, key_mask), (q, k, v))


def test_splash_without_key_mask_at_a_block_multiple():
    """No padding at all (no segment ids), default block sizes."""
    band = Band(causal=True, window=16)
    q, k, v = qkv(1, batch=2, length=128, heads=2, dim=8)

    def ours(q, k, v):
        return splash_attention(q, k, v, None, band, interpret=interpret_unless_on("tpu"))

    assert_same_function(ours, band_reference(band), (q, k, v))


@pytest.mark.parametrize("q_len, kv_len", [(100, 260), (260, 100)])
def test_splash_query_and_key_lengths_differ(q_len, kv_len):
    """With 260 queries and 100 keys, queries past 140 see no key under the window: zeros."""
    band = Band(window=40)
    q = normal(1, (2, q_len, 2, 8))
    k, v = normal(2, (2, kv_len, 2, 8)), normal(3, (2, kv_len, 2, 8))
    key_mask = padding_mask([kv_len - 7, 60], kv_len)

    def ours(q, k, v):
        return splash_attention(q, k, v, key_mask, band, interpret=interpret_unless_on("tpu"))

    assert_same_function(ours, band_reference(band, key_mask), (q, k, v))


def test_splash_bfloat16_keeps_dtype():
    band = Band(causal=True)
    q, k, v = qkv(2, batch=1, length=64, heads=2, dim=8)
    q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (q, k, v))
    out = splash_attention(q16, k16, v16, None, band, interpret=interpret_unless_on("tpu"))
    assert out.dtype == jnp.bfloat16
    assert_close(out.astype(jnp.float32), band_reference(band)(q, k, v), atol=3e-2)


@pytest.mark.parametrize(
    "backend, kwargs, ok, why",
    [
        ("tpu", dict(head_dim=128, dtype=jnp.bfloat16), True, ""),
        ("tpu", dict(head_dim=64, dtype=jnp.float32), True, ""),
        ("tpu", dict(head_dim=8), True, ""),
        ("cpu", dict(head_dim=8, interpret=True), True, ""),
        ("cpu", dict(head_dim=128), False, "TPU"),
        ("gpu", dict(head_dim=128), False, "TPU"),
        ("tpu", dict(head_dim=128, dtype=jnp.float16), False, "float32 or bfloat16"),
        ("tpu", dict(head_dim=128, has_bias=True), False, "position bias"),
        ("tpu", dict(head_dim=128, dropout=True), False, "dropout"),
    ],
)
def test_splash_eligible(backend, kwargs, ok, why):
    kwargs = dict(dict(has_bias=False, dropout=False), **kwargs)
    got_ok, got_why = splash_eligible(backend=backend, **kwargs)
    assert got_ok == ok and why in got_why


# cuDNN (its translation, run through XLA) -------------------------------------------------------


@pytest.mark.parametrize(
    "band, key_padding, with_bias",
    [
        (Band(), "suffix", True),
        (Band(causal=True), "suffix", False),
        (Band(causal=True), "mask", True),
        (Band(window=5), "suffix", False),
        (Band(causal=True, window=5), "suffix", True),
        (Band(causal=True, window=5), "mask", False),
        (Band(block=8, neighbours=True), "mask", True),
        (Band(causal=True, window=6, block=8), "suffix", False),
    ],
    ids=str,
)
def test_cudnn_matches_reference(band, key_padding, with_bias):
    """Suffix padding with a fully padded example (key_value_seq_lengths 0), forward and grads."""
    assert_cudnn_matches_reference(band, key_padding, with_bias, q_len=24, kv_len=24)


@pytest.mark.parametrize(
    "band, q_len, kv_len",
    [
        (Band(causal=True), 24, 40),
        (Band(causal=True), 40, 24),
        (Band(causal=True, window=5), 24, 40),  # with 40 queries cuDNN refuses (cudnn_eligible)
    ],
    ids=str,
)
def test_cudnn_aligns_causal_bands_at_the_first_query_when_lengths_differ(band, q_len, kv_len):
    """Query i sees keys j <= i (top-left alignment, as every other implementation here)."""
    assert_cudnn_matches_reference(band, "mask", False, q_len=q_len, kv_len=kv_len)


def assert_cudnn_matches_reference(band, key_padding, with_bias, *, q_len, kv_len):
    """cudnn_attention in CUDNN_DTYPE against the float32 reference on the same (rounded) inputs;
    example 0 pads its last 7 keys, example 1 is all padding (its queries see no key: zeros)."""
    round_to = lambda x: x.astype(CUDNN_DTYPE).astype(jnp.float32)
    q = round_to(normal(1, (2, q_len, 2, 8)))
    k, v = round_to(normal(2, (2, kv_len, 2, 8))), round_to(normal(3, (2, kv_len, 2, 8)))
    key_mask = padding_mask([kv_len - 7, 0], kv_len)
    bias = round_to(normal(4, (1, 2, q_len, kv_len))) if with_bias else None

    def ours(q, k, v):
        q, k, v = (x.astype(CUDNN_DTYPE) for x in (q, k, v))
        out = cudnn_attention(
            q,
            k,
            v,
            key_mask,
            band,
            bias_BHTS=None if bias is None else bias.astype(CUDNN_DTYPE),
            key_padding=key_padding,
            implementation=CUDNN_IMPLEMENTATION,
        )
        return out.astype(jnp.float32)

    reference_ = band_reference(band, key_mask, bias)
    assert_same_function(ours, reference_, (q, k, v), atol=CUDNN_ATOL)


@pytest.mark.parametrize("band", [*BANDS, Band(causal=True, window=6, block=8)], ids=str)
@pytest.mark.parametrize("key_padding", ["mask", "suffix"])
def test_cudnn_arguments_are_ones_cudnn_takes(monkeypatch, band, key_padding):
    """What jax's cuDNN path accepts: a window only as (left, 0); a mask (cuDNN adds it as a bias)
    at full (T, S); int32 key lengths; and no mask at all for a native band with suffix padding."""
    calls = []
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **kw: calls.append(kw) or a[0])
    q, k, v = qkv(0, batch=2, length=24, heads=2, dim=8)
    cudnn_attention(q, k, v, padding_mask([20, 0], 24), band, key_padding=key_padding)
    (kwargs,) = calls
    assert kwargs["implementation"] == "cudnn"
    assert kwargs["is_causal"] == band.causal
    window = kwargs["local_window_size"]
    assert window is None or (band.causal and window == (band.window, 0))
    mask = kwargs["mask"]
    native = band.block is None and (band.window is None or band.causal)
    if mask is not None:
        assert mask.dtype == bool and mask.shape[-2:] == (24, 24)
    assert (mask is None) == (native and key_padding == "suffix")
    lengths = kwargs["key_value_seq_lengths"]
    if key_padding == "suffix":
        # A fully padded example gets length 1 (one padding key, zeroed after), not an empty row.
        assert lengths.dtype == jnp.int32 and lengths.tolist() == [20, 1]
    else:
        assert lengths is None


def test_cudnn_dropout_needs_cudnn():
    q, k, v = qkv(0, length=8)
    with pytest.raises(ValueError, match="implementation must be 'cudnn'"):
        cudnn_attention(q, k, v, None, Band(), dropout_rate=0.1, implementation="xla")


def test_cudnn_dropout_reaches_cudnn_and_is_not_keyed_by_its_seed():
    """Without a GPU the private dropout call binds its arguments and stops only at the missing
    cuDNN. On a GPU (seen on an H200): dropout changes the output, and two calls with the same seed
    drop different weights, since cuDNN advances a random offset of its own at every execution.
    Nothing we pass replays a step's pattern, so a resumed run could not repeat it: that is why
    `cudnn_eligible` refuses dropout."""
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(0, length=16))
    key_mask, band = padding_mask([16, 4], 16), Band(causal=True, window=3)

    def attend(rate, seed):
        out = cudnn_attention(q, k, v, key_mask, band, dropout_rate=rate, dropout_seed=seed)
        return np.asarray(out.astype(jnp.float32))

    if not ON_GPU:
        with pytest.raises(RuntimeError, match="cuDNN"):
            attend(0.1, 0)
        return
    no_dropout, first, second = attend(0.0, 0), attend(0.1, 0), attend(0.1, 0)
    assert not np.allclose(first, no_dropout)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    "kwargs, ok, why",
    [
        (dict(), True, ""),
        (dict(dtype=jnp.float16, head_dim=128, band=Band(causal=True, window=64)), True, ""),
        (dict(backend="cpu"), False, "GPU"),
        (dict(backend="tpu"), False, "GPU"),
        (dict(dtype=jnp.float32), False, "bfloat16 or float16"),
        (dict(head_dim=136), False, "head dimension"),
        (dict(head_dim=12), False, "head dimension"),
        (dict(band=Band(window=8)), False, "dense T x S mask"),
        (dict(band=Band(block=64)), False, "dense T x S mask"),
        (dict(band=Band(causal=True, block=64, neighbours=True)), False, "dense T x S mask"),
        (dict(band=Band(window=8), allow_mask=True), True, ""),
        (dict(band=Band(block=64), allow_mask=True, lengths=(512, 512)), True, ""),
        (dict(band=Band(block=64), allow_mask=True, lengths=(511, 511)), False, "even lengths"),
        (dict(has_bias=True, lengths=(512, 512)), True, ""),
        (dict(has_bias=True, lengths=(512, 511)), False, "even lengths"),
        (dict(band=Band(causal=True, window=8), lengths=(512, 1024)), True, ""),
        (dict(band=Band(causal=True, window=8), lengths=(1024, 512)), False, "no more queries"),
        (dict(lengths=(511, 511)), True, ""),
        (dict(padding_as_mask=True, lengths=(511, 511)), False, "even lengths"),
        (dict(dropout=True), False, "dropout"),
    ],
)
def test_cudnn_eligible(kwargs, ok, why):
    base = dict(
        backend="gpu", dtype=jnp.bfloat16, head_dim=64, band=Band(), has_bias=False, dropout=False
    )
    got_ok, got_why = cudnn_eligible(**dict(base, **kwargs))
    assert got_ok == ok and why in got_why


# Shared -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "band", [*BANDS, Band(window=3, block=8, neighbours=True), Band(causal=True, window=0)], ids=str
)
@pytest.mark.parametrize("q_len, kv_len", [(40, 40), (23, 57), (57, 23)])
def test_key_interval_is_the_band(band, q_len, kv_len):
    lo, hi = band.key_interval(q_len, kv_len)
    j_S = np.arange(kv_len)
    allowed_TS = (lo[:, None] <= j_S) & (j_S <= hi[:, None])
    np.testing.assert_array_equal(allowed_TS, band.dense(q_len, kv_len))
