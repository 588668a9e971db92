"""Platform attention kernels that `implementation="auto"` prefers: splash (TPU) and cuDNN (GPU).

Both compute softmax(q k^T / sqrt(D) + bias) v under a `Band` (causal, sliding window, block-local)
and key padding, with our conventions: q_BTHD, k_BSHD, v_BSHD (batch, length, heads, head dim), raw
q (the 1/sqrt(D) scale is applied here), key_mask_BS True for real keys (or None), out_BTHD in v's
dtype, and a query with no allowed key gets zeros and zero gradient (the libraries would average
its masked keys uniformly).

  splash_attention  Pallas TPU splash attention (jax.experimental.pallas.ops.tpu.splash_attention):
                    block-sparse, so tiles the band empties are skipped. Serves every `Band` (full,
                    causal and sliding windows as splash's own computed masks; block-local bands as
                    a lazy mask whose partial tiles splash stores once each) and any key padding
                    (segment ids). No additive position bias (ALiBi, T5, Shaw) and no dropout:
                    callers fall back for those. Lengths are padded to splash's 128-lane blocks
                    here. Runs on TPU, or anywhere with interpret=True (slow; for tests).
  cudnn_attention   `jax.nn.dot_product_attention(implementation="cudnn")`: GPU, bf16/fp16, head
                    dim a multiple of 8 up to 128 (256 on Hopper). Causal and causal sliding
                    windows are native (is_causal, local_window_size=(w, 0)) and skip tiles; a
                    non-causal window or a block-local band runs only as a dense T x S mask (cuDNN
                    adds it as a bias: O(T S) memory, nothing skipped), so `cudnn_eligible` refuses
                    those unless asked. Takes an additive bias (ALiBi, T5), not a value term
                    (Shaw's). Key padding as a mask, or as key_value_seq_lengths when the padding
                    is a suffix. cuDNN's own dropout exists (private jax API) and is exposed,
                    but not chosen: its pattern cannot be replayed from our dropout key.

`splash_eligible` and `cudnn_eligible` say whether a call can run and, if not, why (the reason a
caller falls back, in words for error messages).
"""

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from research.attention.sparsity import Band
from research.intmath import round_up

# Splash's blocks must be multiples of the TPU's 128 lanes; lengths are padded to this.
SPLASH_LANES = 128
# Default splash block: the largest of these dividing the padded length (512 is MaxText's choice).
SPLASH_BLOCKS = (512, 256, 128)
SPLASH_DTYPES = (jnp.float32, jnp.bfloat16)
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every GPU cuDNN's flash path runs


# ---------------------------------------------------------------------------------------------
# Which queries have any allowed key (shared by both kernels: their empty rows are zeroed here).


def _rows_with_keys(band: Band, key_mask_BS: Array | None, q_len: int, kv_len: int):
    """valid_BT (or valid_1T): whether query t has any allowed real key; None when all do."""
    lo, hi = band.key_interval(q_len, kv_len)
    nonempty = lo <= hi
    if key_mask_BS is None:
        return None if nonempty.all() else jnp.asarray(nonempty)[None]
    counts = jnp.cumsum(key_mask_BS.astype(jnp.int32), axis=-1)
    counts = jnp.pad(counts, ((0, 0), (1, 0)))  # counts[:, j] = real keys before j
    lo_c, hi_c = np.clip(lo, 0, kv_len), np.clip(hi + 1, 0, kv_len)
    return jnp.asarray(nonempty)[None] & (counts[:, hi_c] > counts[:, lo_c])


def _zero_empty_rows(out_BTHD: Array, valid_BT: Array | None) -> Array:
    if valid_BT is None:
        return out_BTHD
    return jnp.where(valid_BT[:, :, None, None], out_BTHD, jnp.zeros((), out_BTHD.dtype))


# ---------------------------------------------------------------------------------------------
# Splash attention (TPU).


def splash_eligible(
    *,
    backend: str,
    head_dim: int,
    has_bias: bool,
    dropout: bool,
    dtype=None,
    interpret: bool = False,
) -> tuple[bool, str]:
    """Whether splash attention can run this call, and if not, why (for error messages).

    `head_dim` is accepted at any size: this jax's splash kernel tiles and slices its 128-lane
    scratch, so it needs no multiple of 128 (jax PR 26676), and D = 8 runs in interpret mode. Not
    checked on a TPU here; head dims below 128 leave lanes idle.
    """
    if backend != "tpu" and not interpret:
        return False, f"it needs a TPU (backend is {backend}; interpret=True runs it anywhere)"
    if dtype is not None and np.dtype(dtype) not in [np.dtype(d) for d in SPLASH_DTYPES]:
        return False, f"it needs float32 or bfloat16 inputs (got {np.dtype(dtype).name})"
    if head_dim < 1:
        return False, f"it needs a positive head dimension (got {head_dim})"
    if has_bias:
        return False, "it takes no additive position bias (ALiBi, T5, Shaw)"
    if dropout:
        return False, "it has no attention-weight dropout (set attention_dropout_rate=0)"
    return True, ""


@dataclasses.dataclass(frozen=True, eq=True)
class _BandMask(splash.Mask):
    """A band as a lazy splash mask: evaluated per tile on the host, never as a T x S array. Splash
    stores each distinct partial tile once (block-local bands repeat a handful of them)."""

    band: Band
    size: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.size

    def __getitem__(self, idx) -> np.ndarray:
        rows, cols = idx
        q_pos, k_pos = np.arange(self.size[0])[rows], np.arange(self.size[1])[cols]
        return np.asarray(self.band.allows(q_pos[:, None], k_pos[None, :]), np.bool_)


def _splash_mask(band: Band, shape: tuple[int, int]) -> splash.Mask:
    """Splash's own computed masks where one fits (evaluated inside the kernel), else _BandMask."""
    if band.block is None and band.window is None:
        return splash.CausalMask(shape) if band.causal else splash.FullMask(shape)
    if band.block is None:
        right = 0 if band.causal else band.window
        return splash.LocalMask(shape, (band.window, right), offset=0)
    return _BandMask(band, shape)


def _default_block_sizes(q_pad: int, kv_pad: int) -> splash.BlockSizes:
    bq = next(b for b in SPLASH_BLOCKS if q_pad % b == 0)
    bkv = next(b for b in SPLASH_BLOCKS if kv_pad % b == 0)
    return splash.BlockSizes(
        block_q=bq,
        block_kv=bkv,
        block_kv_compute=bkv,
        block_q_dkv=bq,
        block_kv_dkv=bkv,
        block_kv_dkv_compute=bkv,
        block_q_dq=bq,
        block_kv_dq=bkv,
    )


def _padded_lengths(q_len: int, kv_len: int, block_sizes: splash.BlockSizes | None):
    """Lengths padded so every query / key block size of the call divides them."""
    if block_sizes is None:
        return round_up(q_len, SPLASH_LANES), round_up(kv_len, SPLASH_LANES)
    b = block_sizes
    q_blocks = [b.block_q, b.block_q_dkv, b.block_q_dq]
    kv_blocks = [b.block_kv, b.block_kv_compute, b.block_kv_dkv, b.block_kv_dkv_compute]
    kv_blocks.append(b.block_kv_dq)
    q_multiple = math.lcm(SPLASH_LANES, *[x for x in q_blocks if x])
    kv_multiple = math.lcm(SPLASH_LANES, *[x for x in kv_blocks if x])
    return round_up(q_len, q_multiple), round_up(kv_len, kv_multiple)


@functools.lru_cache(maxsize=32)
def _splash_kernel(
    band: Band,
    heads: int,
    q_pad: int,
    kv_pad: int,
    block_sizes: splash.BlockSizes,
    interpret: bool,
):
    """The splash kernel for one static shape (building its mask info is host work). Built at
    compile time even inside a trace, so the cached kernel holds constants, never tracers."""
    mask = splash.MultiHeadMask([_splash_mask(band, (q_pad, kv_pad))] * heads)
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mha(
            mask, block_sizes=block_sizes, head_shards=1, q_seq_shards=1, interpret=interpret
        )


def splash_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    band: Band,
    *,
    interpret: bool = False,
    block_sizes: splash.BlockSizes | None = None,
) -> Array:
    """Splash attention under `band` and key padding; out_BTHD in v's dtype.

    Lengths are padded to multiples of the block sizes (128 when `block_sizes` is None, with
    blocks of 512, 256 or 128, the largest dividing the padded length); padded keys are masked by
    segment ids (as are padded real keys), padded queries are computed and dropped. Splash kernels
    are per example, so the batch is vmapped. `block_sizes` must give the backward blocks too.
    """
    batch, q_len, heads, dim = q_BTHD.shape
    kv_len = k_BSHD.shape[1]
    q_pad, kv_pad = _padded_lengths(q_len, kv_len, block_sizes)
    if block_sizes is None:
        block_sizes = _default_block_sizes(q_pad, kv_pad)
    if not block_sizes.has_backward_blocks:
        raise ValueError(f"splash block_sizes need the backward blocks too: {block_sizes}")
    kernel = _splash_kernel(band, heads, q_pad, kv_pad, block_sizes, interpret)

    def heads_first(x_BTHD: Array, length: int) -> Array:
        x_BHTD = jnp.swapaxes(x_BTHD, 1, 2)
        return jnp.pad(x_BHTD, ((0, 0), (0, 0), (0, length - x_BHTD.shape[2]), (0, 0)))

    q = heads_first((q_BTHD * dim**-0.5).astype(q_BTHD.dtype), q_pad)
    k, v = heads_first(k_BSHD, kv_pad), heads_first(v_BSHD, kv_pad)
    if key_mask_BS is None and kv_pad == kv_len:
        out_BHTD = jax.vmap(kernel)(q, k, v)
    else:
        real_BS = jnp.ones((batch, kv_len), bool) if key_mask_BS is None else key_mask_BS
        # Queries are segment 1; real keys 1, padding 0: a query sees real keys only.
        kv_ids = jnp.pad(real_BS.astype(jnp.int32), ((0, 0), (0, kv_pad - kv_len)))
        q_ids = jnp.ones((batch, q_pad), jnp.int32)
        segments = splash.SegmentIds(q=q_ids, kv=kv_ids)
        out_BHTD = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q, k, v, segments)
    out_BTHD = jnp.swapaxes(out_BHTD[:, :, :q_len], 1, 2).astype(v_BSHD.dtype)
    return _zero_empty_rows(out_BTHD, _rows_with_keys(band, key_mask_BS, q_len, kv_len))


# ---------------------------------------------------------------------------------------------
# cuDNN fused attention (GPU).


def _cudnn_native(band: Band) -> bool:
    """Whether cuDNN runs the band without a dense mask: full, causal, causal sliding window."""
    return band.block is None and (band.window is None or band.causal)


def cudnn_eligible(
    *,
    backend: str,
    dtype,
    head_dim: int,
    band: Band,
    has_bias: bool,
    dropout: bool,
    allow_mask: bool = False,
    padding_as_mask: bool = False,
    lengths: tuple[int, int] | None = None,
) -> tuple[bool, str]:
    """Whether the cuDNN fused kernel can run this call, and if not, why (for error messages).

    allow_mask: accept bands cuDNN runs only as a dense T x S mask (non-causal windows,
        block-local): exact, but O(T S) memory and no skipped tiles.
    padding_as_mask: the call passes a key mask with cudnn_attention's key_padding="mask" (the
        default), which cuDNN adds as a bias too ("suffix" lengths are not a bias).
    lengths: (q_len, kv_len) if known: cuDNN trains with a bias (or mask) only at even lengths,
        and runs a sliding window only with q_len <= kv_len (seen on an H200, jax 0.11.2).
    Dropout is refused: its pattern is not driven by our dropout key (see cudnn_attention).
    """
    if backend != "gpu":
        return False, f"it needs a GPU (backend is {backend})"
    if np.dtype(dtype) not in [np.dtype(d) for d in CUDNN_DTYPES]:
        return False, f"it needs bfloat16 or float16 inputs (got {np.dtype(dtype).name})"
    if head_dim > CUDNN_MAX_HEAD_DIM or head_dim % 8:
        return False, (
            f"it needs a head dimension <= {CUDNN_MAX_HEAD_DIM} and divisible by 8 (got {head_dim})"
        )
    native = _cudnn_native(band)
    if not native and not allow_mask:
        return False, (
            f"it runs {band} only as a dense T x S mask (O(T S) memory, no skipped tiles): "
            "only full, causal and causal sliding-window bands are native"
        )
    as_bias = has_bias or padding_as_mask or not native
    if lengths is not None and band.causal and band.window is not None and lengths[0] > lengths[1]:
        return False, f"its sliding window needs no more queries than keys (got {lengths})"
    if lengths is not None and as_bias and any(n % 2 for n in lengths):
        return False, f"it needs even lengths with a bias or mask (got {lengths})"
    if dropout:
        return False, "its dropout is not driven by our dropout key, so a resume cannot replay it"
    return True, ""


def _cudnn_call(q, k, v, bias, mask, kv_lengths, *, causal, window, dropout_rate, dropout_seed):
    """jax's cuDNN fused attention with dropout (private API: jax.nn does not expose dropout).

    Mirrors jax.nn.dot_product_attention's translation to cuDNN's mask types.
    """
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa

    mask_type = cudnn_fa.MaskType.NO_MASK
    q_lengths = None
    if kv_lengths is not None:
        q_lengths = jnp.full((q.shape[0],), q.shape[1], jnp.int32)
        mask_type = cudnn_fa.MaskType.PADDING_CAUSAL if causal else cudnn_fa.MaskType.PADDING
    elif causal:
        mask_type = cudnn_fa.MaskType.CAUSAL
    return cudnn_fa.dot_product_attention(
        q,
        k,
        v,
        bias,
        mask,
        q_lengths,
        kv_lengths,
        scale=q.shape[-1] ** -0.5,
        mask_type=mask_type,
        seed=dropout_seed,
        dropout_rate=dropout_rate,
        sliding_window_length=None if window is None else window + 1,
    )


def cudnn_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    band: Band,
    *,
    bias_BHTS: Array | None = None,
    key_padding: Literal["mask", "suffix"] = "mask",
    dropout_rate: float = 0.0,
    dropout_seed: int = 0,
    implementation: Literal["cudnn", "xla"] = "cudnn",
) -> Array:
    """`jax.nn.dot_product_attention` under `band`, key padding and an additive bias; out_BTHD.

    band: causal -> is_causal; a causal window w -> local_window_size=(w, 0) (cuDNN takes only
        left windows, as (i - w - 1, i]); anything else (non-causal window, block-local) -> the
        dense band mask, with is_causal / the causal window still passed so cuDNN skips tiles.
    bias_BHTS: additive logit bias broadcastable to (B, H, T, S) with full T and S (ALiBi, T5).
    key_padding: "mask" passes key_mask_BS as a mask (any pattern; cuDNN adds it as a
        (B, 1, T, S) bias); "suffix" passes key_value_seq_lengths = key_mask_BS.sum(-1) (at
        least 1), which is only right when each row's real keys come first (True.. False..).
    dropout_rate, dropout_seed: cuDNN's own dropout on the weights, through jax's private
        jax._src.cudnn API (jax.nn does not expose it). Needs implementation="cudnn". Seen on
        an H200 (jax 0.11.2): the seed is a static int, and cuDNN adds an offset of its own that
        advances at every execution, so each step draws a new pattern (averaging to the
        undropped output) but no key of ours can replay one, and two calls inside one jitted
        function with the same seed drop the same weights. Hence `auto` never picks it.
    implementation: "xla" runs the same translated arguments through XLA (CPU tests).
    """
    if key_padding not in ("mask", "suffix"):
        raise ValueError(f"key_padding must be 'mask' or 'suffix' (got {key_padding!r})")
    q_len, kv_len = q_BTHD.shape[1], k_BSHD.shape[1]
    causal_window = band.window if band.causal and band.window is not None else None
    mask = None
    if not _cudnn_native(band):
        mask = jnp.asarray(band.dense(q_len, kv_len))[None, None]
    kv_lengths = None
    if key_mask_BS is not None and key_padding == "suffix":
        # At least 1: a fully padded example then attends to one padding key (zeroed below)
        # rather than to none, whatever cuDNN makes of an empty row.
        kv_lengths = jnp.maximum(key_mask_BS.astype(jnp.int32).sum(-1), 1)
    elif key_mask_BS is not None:
        key_mask = key_mask_BS.astype(bool)[:, None, None, :]
        mask = key_mask if mask is None else mask & key_mask
    if mask is not None:
        # cuDNN needs the mask (added as a bias) at full (T, S).
        mask = jnp.broadcast_to(mask, (mask.shape[0], 1, q_len, kv_len))
    if dropout_rate > 0.0:
        if implementation != "cudnn":
            raise ValueError("cuDNN dropout has no XLA twin: implementation must be 'cudnn'")
        out_BTHD = _cudnn_call(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            bias_BHTS,
            mask,
            kv_lengths,
            causal=band.causal,
            window=causal_window,
            dropout_rate=dropout_rate,
            dropout_seed=dropout_seed,
        )
    else:
        out_BTHD = jax.nn.dot_product_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            bias=bias_BHTS,
            mask=mask,
            is_causal=band.causal,
            key_value_seq_lengths=kv_lengths,
            local_window_size=None if causal_window is None else (causal_window, 0),
            implementation=implementation,
        )
    out_BTHD = out_BTHD.astype(v_BSHD.dtype)
    return _zero_empty_rows(out_BTHD, _rows_with_keys(band, key_mask_BS, q_len, kv_len))
