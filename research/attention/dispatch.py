"""Which implementation runs a softmax variant's attention, and the call into it.

Every softmax variant (full, local, block_local and the position presets) is one `Band` plus a
position scheme; `softmax_attention` runs it on the implementation `choose_implementation` picks:

  dense   one (T, S) score matrix: the reference every other path is tested against, and the
          fastest on CPU at short lengths (up to DENSE_MAX_LENGTH);
  kernel  the block-sparse flash kernel (kernel.py): any band, position scheme and dropout, O(N)
          memory, only the tiles the band needs;
  cudnn   cuDNN's fused kernel (GPU; platform.py), where it can serve the call;
  pallas  the block-sparse kernel in Pallas: any band, padding, ALiBi, T5, Shaw and dropout
          in-kernel, only the tiles the band needs; for GPUs (pallas_gpu.py; Triton), for TPUs
          (pallas_tpu.py; Mosaic), and the GPU's in `interpret` mode elsewhere (for tests);
  splash  Pallas splash attention (TPU; platform.py; `interpret` mode elsewhere, for tests).

`auto` (the default) picks, per platform: GPU -> cudnn when it serves the call without a T x S
bias, else pallas when it serves it (every band, position scheme and dropout), else dense (a
dtype neither kernel takes; an XLA loop is never chosen on a GPU);
TPU -> splash when eligible (no position bias, no dropout), else pallas (a dtype it takes), else
kernel; CPU -> dense up to DENSE_MAX_LENGTH, else kernel.
docs/attention.md has the table, tests/attention/test_dispatch.py states it case by case.
"""

import dataclasses
import functools
import sys

import jax
import numpy as np
from jax import Array

from research.attention import pallas_gpu, pallas_tpu, platform
from research.attention.dense import positional_attention
from research.attention.kernel import block_sparse_attention
from research.attention.relative import ALiBi, Position, Shaw, T5Bias, alibi_slopes
from research.attention.sparsity import Band
from research.errors import check_choice, check_positive
from research.intmath import round_up

IMPLEMENTATIONS = ("auto", "kernel", "dense", "cudnn", "pallas", "splash")
# On CPU, dense beats the kernel's loop up to here (fwd + bwd, B=8, H=4, D=64, 2026-12-07: 256 ->
# dense 20 ms, kernel 28 ms; 512 -> dense 105 ms, kernel 69 ms).
DENSE_MAX_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """How a softmax variant runs: `implementation` (one of IMPLEMENTATIONS) and the kernel's
    tile (block_q query rows x block_k keys; 0 = `default_blocks` for the platform and length)."""

    implementation: str = "auto"
    block_q: int = 0
    block_k: int = 0

    def check(self, field: str, head_dim: int | None = None) -> None:
        check_choice(f"{field}.implementation", self.implementation, IMPLEMENTATIONS)
        check_positive(f"{field}.block_q", self.block_q, allow_zero=True)
        check_positive(f"{field}.block_k", self.block_k, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class Call:
    """The facts about one attention call that decide its implementation; `position` is the
    position scheme's class (relative.SCHEMES)."""

    backend: str
    dtype: np.dtype
    head_dim: int
    band: Band
    position: type[Position]
    dropout: bool
    q_len: int
    kv_len: int
    key_mask: bool = True

    @property
    def position_bias(self) -> bool:
        return self.position.adds_bias

    @property
    def position_value(self) -> bool:
        return self.position.adds_value


class UnusableImplementation(ValueError):
    """An explicitly requested platform kernel cannot serve the call; the message says why."""


def _cudnn_check(call: Call) -> tuple[bool, str]:
    if call.position_value:
        return False, "a position value term (Shaw's) is not an additive bias it takes"
    return platform.cudnn_eligible(
        backend=call.backend,
        dtype=call.dtype,
        head_dim=call.head_dim,
        band=call.band,
        has_bias=call.position_bias,
        dropout=call.dropout,
        padding_as_mask=call.key_mask,
        lengths=(call.q_len, call.kv_len),
    )


def _pallas_check(call: Call) -> tuple[bool, str]:
    kernel = pallas_tpu if call.backend == "tpu" else pallas_gpu
    return kernel.eligible(dtype=call.dtype)


def _splash_check(call: Call) -> tuple[bool, str]:
    return platform.splash_eligible(
        backend=call.backend,
        head_dim=call.head_dim,
        has_bias=call.position_bias or call.position_value,
        dropout=call.dropout,
        dtype=call.dtype,
        interpret=call.backend != "tpu",
    )


def choose_implementation(requested: str, call: Call) -> tuple[str, str]:
    """(implementation, why) for `requested` (`auto` or an explicit one) and this call."""
    if requested != "auto":
        return requested, "asked for"
    if call.backend == "gpu":
        cudnn, cudnn_why = _cudnn_check(call)
        if cudnn and not call.position_bias:
            return "cudnn", "GPU, and cuDNN can serve the call"
        pallas, pallas_why = _pallas_check(call)
        if pallas:
            reason = "it needs a T x S bias" if cudnn else cudnn_why
            return "pallas", f"GPU, cuDNN cannot serve it without a T x S array ({reason})"
        return "dense", (
            f"GPU, neither cuDNN ({cudnn_why}) nor the Pallas kernel ({pallas_why}) serves it; "
            "XLA's dense path beats any XLA loop"
        )
    if call.backend == "tpu":
        ok, why = _splash_check(call)
        if ok:
            return "splash", "TPU, and splash attention can serve the call"
        pallas, pallas_why = _pallas_check(call)
        if pallas:
            return "pallas", f"TPU, splash cannot serve it ({why})"
        return (
            "kernel",
            f"TPU, neither splash ({why}) nor the Pallas kernel ({pallas_why}) serves it",
        )
    if max(call.q_len, call.kv_len) <= DENSE_MAX_LENGTH:
        return "dense", f"CPU, length <= {DENSE_MAX_LENGTH}: one matrix beats the kernel's loop"
    return "kernel", f"CPU, length > {DENSE_MAX_LENGTH}"


def default_blocks(backend: str, band: Band) -> tuple[int, int]:
    """The kernel's (block_q, block_k) by platform and band, from measurements on CPU (forward +
    backward of the attention alone, B=8, H=4, D=64 at 4K, medians of 5 in one script; run-to-run
    noise on this machine is about 15%):

    - full and causal attention: 512 x 1024 tiles (full 3.6 s; 512 x 512 and 1024 x 1024: 3.8 s,
      1024 x 512 and 256 x 1024: 4.0 s, 256 x 512: 4.1 s);
    - bands of reach r (a window, a block): query blocks of about 2r, at least 128 and at most
      512, a whole number of blocks; the key tile is then the band's span (kernel.py), so block_k
      does not apply. Window 128: 256 rows 0.68 s, 128 rows 0.71 s, 512 rows 0.83 s; blocks of
      128 with neighbours: 256 rows 0.72 s, 128 rows 0.77 s, 512 rows 0.96 s.

    Blocks longer than a sequence shrink to it."""
    if band.block is not None:
        reach = band.block
    elif band.window is not None:
        reach = band.window
    else:
        return (512, 1024) if backend == "cpu" else (512, 512)
    size = 128
    while size < min(2 * reach, 512):
        size *= 2
    if band.block is not None and size % band.block:
        size = round_up(size, band.block)
    return size, size


def require(implementation: str, call: Call) -> None:
    """UnusableImplementation when an explicitly requested platform kernel cannot serve the call
    (its message, "implementation='cudnn' is not usable: <why>", names the option)."""
    checks = {"cudnn": _cudnn_check, "pallas": _pallas_check, "splash": _splash_check}
    if implementation in checks:
        ok, why = checks[implementation](call)
        if not ok:
            raise UnusableImplementation(f"implementation={implementation!r} is not usable: {why}")


@functools.cache
def say_interpreted(implementation: str, backend: str) -> None:
    """Says once per process, on stderr, that a Pallas kernel runs in interpret mode off its
    platform: a path for tests (tiny ListOps on CPU trains at ~1.6 steps/s under splash, ~10 under
    `auto`)."""
    print(
        f"note: attention implementation={implementation!r} on {backend} runs Pallas in "
        "interpret mode, "
        "a path for tests and several times slower than 'auto'; set "
        "config.model.attention_options.<variant>.implementation=auto for speed",
        file=sys.stderr,
    )


def softmax_attention(
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    band: Band,
    *,
    options: KernelOptions,
    position: Position,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """softmax(q k^T / sqrt(D) + position bias) v (+ position value term) over the pairs `band`
    allows and valid keys, on the implementation `options` asks for; out_BTHD. RoPE has already
    been applied to q and k. Raises UnusableImplementation when `options` asks for a platform
    kernel that cannot serve this call."""
    dropout = dropout_key is not None and dropout_rate > 0.0
    call = Call(
        backend=jax.default_backend(),
        dtype=np.dtype(q_BTHD.dtype),
        head_dim=q_BTHD.shape[-1],
        band=band,
        position=type(position),
        dropout=dropout,
        q_len=q_BTHD.shape[1],
        kv_len=k_BSHD.shape[1],
        key_mask=key_mask_BS is not None,
    )
    implementation, _ = choose_implementation(options.implementation, call)
    require(implementation, call)
    if implementation == "kernel":
        block_q, block_k = default_blocks(call.backend, band)
        terms, params = position.tile_terms()
        return block_sparse_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            key_mask_BS,
            band,
            block_q=options.block_q or block_q,
            block_k=options.block_k or block_k,
            terms=terms,
            params=params,
            dropout_rate=dropout_rate,
            dropout_key=dropout_key if dropout else None,
        )
    if implementation == "cudnn":
        bias = position.logits_bias(q_BTHD, k_BSHD.shape[1], 0) if position.adds_bias else None
        return platform.cudnn_attention(q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band, bias_BHTS=bias)
    if implementation == "pallas":
        if call.backend == "tpu":
            attention, blocks = pallas_tpu.pallas_tpu_attention, default_blocks("tpu", band)
        else:
            attention, blocks = pallas_gpu.pallas_gpu_attention, (0, 0)  # its DEFAULT_BLOCK
        interpret = call.backend not in ("gpu", "tpu")
        if interpret:
            say_interpreted(implementation, call.backend)
        return attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            key_mask_BS,
            band,
            **_pallas_position(position),
            dropout_rate=dropout_rate,
            dropout_key=dropout_key if dropout else None,
            block_q=options.block_q or blocks[0],
            block_k=options.block_k or blocks[1],
            interpret=interpret,
        )
    if implementation == "splash":
        interpret = call.backend != "tpu"
        if interpret:
            say_interpreted(implementation, call.backend)
        return platform.splash_attention(
            q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band, interpret=interpret
        )
    return dense_attention(
        q_BTHD,
        k_BSHD,
        v_BSHD,
        key_mask_BS,
        band,
        position=position,
        dropout_rate=dropout_rate,
        dropout_key=dropout_key if dropout else None,
    )


def _pallas_position(position: Position) -> dict:
    """The Pallas kernels' arguments for a position scheme (RoPE rotates q, k before)."""
    if isinstance(position, ALiBi):
        return {"alibi_slopes_H": alibi_slopes(position.num_heads)}
    if isinstance(position, T5Bias):
        buckets = pallas_gpu.T5Buckets(
            position.num_buckets, position.max_distance, position.bidirectional
        )
        return {"t5_table_NH": position.embedding_NH[...], "t5_buckets": buckets}
    if isinstance(position, Shaw):
        return {"shaw_RD": (position.key_RD[...], position.value_RD[...])}
    return {}


def dense_attention(
    q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band, *, position, dropout_rate=0.0, dropout_key=None
):
    """The reference: the dense (T, S) weights under the band mask, with the position terms."""
    mask = band.mask(key_mask_BS, q_BTHD.shape[1], k_BSHD.shape[1])
    return positional_attention(
        q_BTHD,
        k_BSHD,
        v_BSHD,
        mask,
        position,
        0,
        dropout_rate=dropout_rate,
        dropout_key=dropout_key,
    )
