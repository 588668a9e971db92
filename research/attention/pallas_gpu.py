"""The block-sparse flash kernel as a Pallas kernel for GPUs (Triton backend): kernel.py's
computation where an XLA loop would be slow.

`pallas_gpu_attention` computes softmax(q k^T / sqrt(D) + bias) v under a `Band` and key padding,
with the conventions of every other path (q_BTHD, k_BSHD, v_BSHD; key_mask_BS True for real keys;
out_BTHD in v's dtype; a query with no allowed key gets zeros and zero gradient). Each program is
one (query block, batch x head) pair in the forward and the dq pass, one (key block, batch x head)
pair in the dk/dv pass, and loops over only the tiles the band needs (`Band.key_blocks`: the
needed key blocks of a query block, and the query blocks of a key block, are each one run), so
non-causal windows and block-local bands cost O(T) like causal ones. The backward pass is
FlashAttention-2's: the forward pass saves the output and each row's log-sum-exp.

In-kernel, with no T x S array anywhere:
- the band and key padding, from positions and a (B, S) key mask;
- ALiBi's bias, -slope_h |j - i|, from positions;
- T5's bias, a learned per-head table read at each pair's bucket (relative.t5_bucket, from
  positions): a gather from the row's table per tile; its gradient summed per bucket in the dk/dv
  pass;
- Shaw's terms (relative.Shaw): the key term q_i.a^K_r, r = clip(j - i) + k, gathered per tile
  from the (T, 2k + 1) products q a^K computed before the kernel; the value term sum_j w_ij a^V_r,
  the weights summed per r in the forward pass (online, like the output) and mixed with a^V at
  the end. Their gradients are (T, 2k + 1) arrays from the dq pass, per-r sums of the logits'
  gradient and of the weights, turned into a^K's and a^V's gradients outside;
- attention dropout, each weight's keep bit a hash of (seed, batch x head, query, key)
  (dropout.py): the same bits in the forward and backward pass and in every other path,
  regenerated per tile, none stored.

Per-bucket sums (T5's table gradient, Shaw's per-r sums) loop over the buckets between a tile's
least and greatest, a masked row sum each: one to three for a tile far from the diagonal, all of
them on it. No atomics: Pallas's interpret mode does not add repeated indices as a GPU's atomics
do, so CI could not test them.

Pallas runs this on a GPU through Triton; anywhere else with interpret=True (the tests' path, slow).
The custom VJP around the kernels (`run_kernels`: the rows layout, padding, the position
gradients) is shared with pallas_tpu.py, whose `_Plan` subclass brings the TPU's kernels, tiles
and layout.
"""

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from research.attention.dropout import drop_with_gradient, dropout_seed, keep_bits, scale_kept
from research.attention.relative import shaw_index, t5_bucket
from research.attention.sparsity import Band
from research.intmath import round_up

# A large finite stand-in for -inf: Triton's exp of (-inf) - (-inf) would be NaN.
MASKED = -0.7 * float(np.finfo(np.float32).max)
GPU_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
DEFAULT_BLOCK = 64
MIN_BLOCK = 16  # Triton's smallest dot


@dataclasses.dataclass(frozen=True)
class T5Buckets:
    """T5's bucketing of relative positions (relative.t5_bucket's arguments)."""

    num_buckets: int
    max_distance: int
    bidirectional: bool

    def of(self, q_pos, k_pos):
        return t5_bucket(
            k_pos - q_pos,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
        )


@dataclasses.dataclass(frozen=True)
class ShawClip:
    """Shaw's relative positions, clipped to [-clip, clip]: index r = clip(j - i) + clip."""

    clip: int

    def of(self, q_pos, k_pos):
        return shaw_index(k_pos - q_pos, self.clip)

    @property
    def width(self) -> int:
        """The padded number of indices, 2 clip + 1 rounded up to a power of two (Triton)."""
        return max(MIN_BLOCK, pl.next_power_of_2(2 * self.clip + 1))


def eligible(*, dtype) -> tuple[bool, str]:
    """(whether this kernel serves a call, why not): every band, position scheme and dropout,
    in f32, bf16 or f16."""
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in GPU_DTYPES]:
        return False, f"dtype {jnp.dtype(dtype).name} is not one of f32, bf16, f16"
    return True, ""


# ---------------------------------------------------------------------------------------------
# The plan: tile sizes and the runs of blocks each program visits.


def _runs(needed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first_N, count_N) of each row's run of True in needed_NM (count 0 for an empty row)."""
    count = needed.sum(1).astype(np.int32)
    first = np.where(count > 0, needed.argmax(1), 0).astype(np.int32)
    # Band intervals are monotone, so each row's needed blocks are contiguous.
    cols = np.arange(needed.shape[1])
    assert (needed == ((cols >= first[:, None]) & (cols < (first + count)[:, None]))).all()
    return first, count


def _block(requested: int, length: int) -> int:
    """The tile along one axis: the requested size, or the length when shorter, rounded up to a
    power of two of at least MIN_BLOCK (Triton's shapes)."""
    return max(MIN_BLOCK, pl.next_power_of_2(min(requested, length)))


def _bias_fn(position, position_ref, qa_ref, q_start):
    """The tile's position bias as a function of (q_pos, k_pos), or None: ALiBi's from the row's
    slope, T5's gathered from the row's table, Shaw's gathered from the rows' q.a^K (qa_ref's row
    of query q_pos is q_pos - q_start)."""
    if position == "alibi":
        slope = position_ref[0]
        return lambda q_pos, k_pos: -slope * jnp.abs(k_pos - q_pos).astype(jnp.float32)
    if isinstance(position, T5Buckets):
        return lambda q_pos, k_pos: position_ref[position.of(q_pos, k_pos)].astype(jnp.float32)
    if isinstance(position, ShawClip):
        return lambda q_pos, k_pos: _at_shaw_index(qa_ref, position, q_pos, k_pos, q_start)
    return None


def _at_shaw_index(ref, position: ShawClip, q_pos, k_pos, q_start):
    """A (rows, R) array laid out on the tile: each pair's value at its query's row (q_pos -
    q_start) and its Shaw index (a gather)."""
    index = position.of(q_pos, k_pos)
    return ref[jnp.broadcast_to(q_pos - q_start, index.shape), index]


def _bucket_sums(x, bucket, sums):
    """sums_XP plus, per row, the sum of x_XY over each bucket (sums[:, b] += x[bucket == b]):
    a loop over the buckets between the tile's least and greatest (masked pairs have x = 0)."""
    columns = jnp.arange(sums.shape[1])[None, :]

    def add(b, sums):
        total = jnp.sum(jnp.where(bucket == b, x, 0.0), axis=1)
        return sums + jnp.where(columns == b, total[:, None], 0.0)

    return jax.lax.fori_loop(bucket.min(), bucket.max() + 1, add, sums)


def _scores(q, k, q_pos, k_pos, keys_valid, band: Band, bias_fn):
    """The tile's logits (f32; MASKED where the band or padding forbids the pair)."""
    s = pltriton.dot(q, k, trans_b=True)
    if bias_fn is not None:
        s = s + bias_fn(q_pos, k_pos)
    allowed = keys_valid
    if band != Band():
        allowed = allowed & band.allows(q_pos, k_pos, jnp)
    return jnp.where(allowed, s, MASKED)


def _value_gradient(do, v, doa_ref, q_pos, k_pos, q_start, position):
    """dp: the gradient of the (dropped) weights, do.v_j, plus do.a^V_r with Shaw (gathered from
    the rows' do.a^V like the key term)."""
    dp = pltriton.dot(do, v, trans_b=True)
    if isinstance(position, ShawClip):
        dp = dp + _at_shaw_index(doa_ref, position, q_pos, k_pos, q_start)
    return dp


# ---------------------------------------------------------------------------------------------
# Kernels. Refs: q/k/v/o/do (rows, length, D); lse/delta (rows, length); keys (B, S) as f32;
# position (rows, P): ALiBi's slope or T5's table; qa/doa (rows, length, R): Shaw's q.a^K and
# do.a^V; av (R, D): Shaw's a^V (qa, doa and av are placeholders of one element without Shaw).


def _forward_kernel(
    first_ref, count_ref, seed_ref, position_ref, qa_ref, av_ref, q_ref, k_ref, v_ref, keys_ref,
    o_ref, lse_ref, *, band, block_q, block_k, rate, position,
):  # fmt: skip
    qi, row = pl.program_id(0), pl.program_id(1)
    q = q_ref[...]
    q_pos = qi * block_q + jnp.arange(block_q)[:, None]
    bias_fn = _bias_fn(position, position_ref, qa_ref, qi * block_q)
    shaw = isinstance(position, ShawClip)
    seed = seed_ref[0]

    def body(kb, carry):
        acc, m_prev, l_prev, value_sums = carry
        window = pl.ds(kb * block_k, block_k)
        k_pos = kb * block_k + jnp.arange(block_k)[None, :]
        keys_valid = keys_ref[window][None, :] > 0
        s = _scores(q, k_ref[window, :], q_pos, k_pos, keys_valid, band, bias_fn)
        m_next = jnp.maximum(m_prev, s.max(axis=1))
        correction = jnp.exp(m_prev - m_next)
        p = jnp.exp(s - m_next[:, None])
        l_next = l_prev * correction + p.sum(axis=1)
        if rate > 0.0:
            p = scale_kept(p, keep_bits(seed, row, q_pos, k_pos, rate), rate)
        v = v_ref[window, :]
        acc = acc * correction[:, None] + pltriton.dot(p.astype(v.dtype), v)
        if shaw:  # the weights per Shaw index, rescaled online like acc
            value_sums = _bucket_sums(
                p, position.of(q_pos, k_pos), value_sums * correction[:, None]
            )
        return acc, m_next, l_next, value_sums

    first = first_ref[0]
    acc = jnp.zeros((block_q, v_ref.shape[-1]), jnp.float32)
    top = jnp.full((block_q,), MASKED, jnp.float32)
    total = jnp.zeros((block_q,), jnp.float32)
    value_sums = jnp.zeros((block_q, qa_ref.shape[-1] if shaw else 1), jnp.float32)
    acc, top, total, value_sums = jax.lax.fori_loop(
        first, first + count_ref[0], body, (acc, top, total, value_sums)
    )
    if shaw:
        acc = acc + pltriton.dot(value_sums, av_ref[...])
    seen = top > 0.5 * MASKED  # rows with an allowed key
    total = jnp.where(seen, total, 1.0)
    o_ref[...] = jnp.where(seen[:, None], acc / total[:, None], 0.0).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, top + jnp.log(total), jnp.inf)


def _dkdv_kernel(
    first_ref, count_ref, seed_ref, position_ref, qa_ref, av_ref, q_ref, k_ref, v_ref, keys_ref,
    do_ref, lse_ref, delta_ref, doa_ref, dk_ref, dv_ref, *dtable_ref, band, block_q, block_k,
    rate, position,
):  # fmt: skip
    """dk, dv of one key block; with T5, also its table's gradient from this key block,
    dtable_ref (the row's buckets; summed over key blocks and batch outside)."""
    kb, row = pl.program_id(0), pl.program_id(1)
    k, v = k_ref[...], v_ref[...]
    k_pos = kb * block_k + jnp.arange(block_k)[None, :]
    keys_valid = keys_ref[...][None, :] > 0
    bias_fn = _bias_fn(position, position_ref, qa_ref, 0)
    t5 = isinstance(position, T5Buckets)
    seed = seed_ref[0]

    def body(qi, carry):
        dk, dv, table_sums = carry
        window = pl.ds(qi * block_q, block_q)
        q_pos = qi * block_q + jnp.arange(block_q)[:, None]
        q, do = q_ref[window, :], do_ref[window, :]
        s = _scores(q, k, q_pos, k_pos, keys_valid, band, bias_fn)
        p = jnp.exp(s - lse_ref[window][:, None])  # 0 on rows with no key (lse = inf)
        dp = _value_gradient(do, v, doa_ref, q_pos, k_pos, 0, position)
        p_dropped, dp = drop_with_gradient(p, dp, seed, row, q_pos, k_pos, rate)
        dv = dv + pltriton.dot(p_dropped.astype(do.dtype), do, trans_a=True)
        ds = p * (dp - delta_ref[window][:, None])
        dk = dk + pltriton.dot(ds.astype(q.dtype), q, trans_a=True)
        if t5:
            table_sums = _bucket_sums(ds, position.of(q_pos, k_pos), table_sums)
        return dk, dv, table_sums

    first = first_ref[0]
    dk = jnp.zeros(k.shape, jnp.float32)
    dv = jnp.zeros(v.shape, jnp.float32)
    table_sums = jnp.zeros((block_q, position_ref.shape[-1] if t5 else 1), jnp.float32)
    dk, dv, table_sums = jax.lax.fori_loop(first, first + count_ref[0], body, (dk, dv, table_sums))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
    if t5:
        dtable_ref[0][...] = table_sums.sum(0, keepdims=True)


def _dq_kernel(
    first_ref, count_ref, seed_ref, position_ref, qa_ref, av_ref, q_ref, k_ref, v_ref, keys_ref,
    do_ref, lse_ref, delta_ref, doa_ref, dq_ref, *shaw_refs, band, block_q, block_k, rate,
    position,
):  # fmt: skip
    """dq of one query block; with Shaw, also shaw_refs = (dqa_ref, weights_ref): the logits'
    gradient and the (dropped) weights summed per Shaw index, for a^K's and a^V's gradients."""
    qi, row = pl.program_id(0), pl.program_id(1)
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
    q_pos = qi * block_q + jnp.arange(block_q)[:, None]
    bias_fn = _bias_fn(position, position_ref, qa_ref, qi * block_q)
    shaw = isinstance(position, ShawClip)
    seed = seed_ref[0]

    def body(kb, carry):
        dq, dqa, weight_sums = carry
        window = pl.ds(kb * block_k, block_k)
        k_pos = kb * block_k + jnp.arange(block_k)[None, :]
        keys_valid = keys_ref[window][None, :] > 0
        k, v = k_ref[window, :], v_ref[window, :]
        s = _scores(q, k, q_pos, k_pos, keys_valid, band, bias_fn)
        p = jnp.exp(s - lse)
        dp = _value_gradient(do, v, doa_ref, q_pos, k_pos, qi * block_q, position)
        p_dropped, dp = drop_with_gradient(p, dp, seed, row, q_pos, k_pos, rate)
        ds = p * (dp - delta)
        if shaw:
            index = position.of(q_pos, k_pos)
            dqa = _bucket_sums(ds, index, dqa)
            weight_sums = _bucket_sums(p_dropped, index, weight_sums)
        return dq + pltriton.dot(ds.astype(k.dtype), k), dqa, weight_sums

    first = first_ref[0]
    sums = jnp.zeros((block_q, qa_ref.shape[-1] if shaw else 1), jnp.float32)
    dq, dqa, weight_sums = jax.lax.fori_loop(
        first, first + count_ref[0], body, (jnp.zeros(q.shape, jnp.float32), sums, sums)
    )
    dq_ref[...] = dq.astype(dq_ref.dtype)
    if shaw:
        shaw_refs[0][...] = dqa
        shaw_refs[1][...] = weight_sums


# ---------------------------------------------------------------------------------------------
# The calls.


def whole_block(shape: tuple) -> pl.BlockSpec:
    """A block that is the whole array (None for a squeezed size-1 dim), on any grid."""
    return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about one call (hashable: part of the compiled program), and the
    platform's kernels and layout: this class is the GPU's (Triton); pallas_tpu.py's subclass is
    the TPU's, with the same custom VJP around it (`_attention`)."""

    # The (forward, dk/dv, dq) kernels and the trailing dims of each row's statistics (lse,
    # delta): none on a GPU, TPU lanes on a TPU.
    KERNELS: ClassVar[tuple] = (_forward_kernel, _dkdv_kernel, _dq_kernel)
    STAT_LANES: ClassVar[tuple[int, ...]] = ()
    DEFAULT_BLOCK: ClassVar[int] = DEFAULT_BLOCK

    band: Band
    q_len: int
    kv_len: int
    block_q: int
    block_k: int
    heads: int
    rows: int  # batch x heads
    dim: int  # the padded head dim
    rate: float  # dropout; 0 = none
    position: str | T5Buckets | ShawClip | None  # "alibi", T5's buckets, Shaw's clip, or none
    position_width: int  # per row: 1 (ALiBi's slope, or unused) or T5's table, padded
    interpret: bool

    @property
    def t_pad(self) -> int:
        return round_up(self.q_len, self.block_q)

    @property
    def s_pad(self) -> int:
        return round_up(self.kv_len, self.block_k)

    @property
    def shaw(self) -> bool:
        return isinstance(self.position, ShawClip)

    @staticmethod
    def blocks(block_q: int, q_len: int, block_k: int, kv_len: int) -> tuple[int, int]:
        """The (block_q, block_k) tile the kernels run for the requested one."""
        return _block(block_q, q_len), _block(block_k, kv_len)

    @staticmethod
    def padded_dim(dim: int) -> int:
        """The head dim the kernels see: a power of two of at least MIN_BLOCK (Triton's dot)."""
        return max(MIN_BLOCK, pl.next_power_of_2(dim))

    def stat(self, x_XT: Array) -> Array:
        """A per-row statistic (rows, length) in the kernels' layout."""
        if not self.STAT_LANES:
            return x_XT
        return jnp.broadcast_to(x_XT[..., None], (*x_XT.shape, *self.STAT_LANES))

    def runs(self, *, by_key: bool) -> tuple[np.ndarray, np.ndarray]:
        """(first_N, count_N): the run of blocks each program visits, key blocks per query block
        or (by_key) query blocks per key block."""
        needed = self.band.key_blocks(self.q_len, self.kv_len, self.block_q, self.block_k)
        return _runs(needed.T if by_key else needed)

    def operand_specs(self, spec, position, keys) -> list:
        """The specs of (position, qa, av, q, k, v, keys, do, lse, delta, doa), from the
        platform's `spec(side, *trailing)` and its specs of the position parameters and the key
        mask; Shaw's qa, doa and av are one-element placeholders without Shaw."""
        if self.shaw:
            per_query = spec("q", self.position.width)
            value_embeddings = whole_block((self.position.width, self.dim))
        else:
            per_query, value_embeddings = whole_block((None, 1, 1)), whole_block((1, 1))
        return [
            position,
            per_query,  # qa
            value_embeddings,  # av
            spec("q", self.dim),
            spec("k", self.dim),
            spec("k", self.dim),
            keys,
            spec("q", self.dim),  # do
            spec("q", *self.STAT_LANES),  # lse
            spec("q", *self.STAT_LANES),  # delta
            per_query,  # doa
        ]

    def call(self, kernel, *, by_key: bool, outputs: list, name: str):
        """pallas_call of `kernel` on a grid of (key blocks if by_key else query blocks, rows),
        its inputs (first, count, seed, position, qa, av, q, k, v, keys[, do, lse, delta, doa])
        each the program's own block along the blocked side and whole along the other (qa, av
        and doa whole placeholders without Shaw); `outputs` (shape, dtype, side) blocked along
        their side, or one per program for side "program"."""
        heads = self.heads
        blocks = {"q": (self.block_q, self.t_pad), "k": (self.block_k, self.s_pad)}
        blocked = "k" if by_key else "q"

        def spec(side, *trailing):
            if side == "program":
                return pl.BlockSpec(
                    (None, None, *trailing), lambda i, r: (r, i, *[0] * len(trailing))
                )
            tile, length = blocks[side]
            if side == blocked:
                return pl.BlockSpec(
                    (None, tile, *trailing), lambda i, r: (r, i, *[0] * len(trailing))
                )
            return pl.BlockSpec(
                (None, length, *trailing), lambda i, r: (r, 0, *[0] * len(trailing))
            )

        tile_k, length_k = blocks["k"]
        keys = pl.BlockSpec((None, tile_k if by_key else length_k),
                            lambda i, r: (r // heads, i if by_key else 0))  # fmt: skip
        in_specs = [
            pl.BlockSpec((1,), lambda i, r: (i,)),  # first
            pl.BlockSpec((1,), lambda i, r: (i,)),  # count
            pl.BlockSpec((1,), lambda i, r: (0,)),  # seed
            *self.operand_specs(
                spec, pl.BlockSpec((None, self.position_width), lambda i, r: (r, 0)), keys
            ),
        ]
        out_specs = [spec(side, *shape[2:]) for shape, _, side in outputs]
        out_shape = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype, _ in outputs]
        settings = dict(band=self.band, block_q=self.block_q, block_k=self.block_k,
                        rate=self.rate, position=self.position)  # fmt: skip

        first, count = self.runs(by_key=by_key)

        def run(*args):
            return pl.pallas_call(
                functools.partial(kernel, **settings),
                grid=(len(first), self.rows),
                in_specs=in_specs[: 2 + len(args)],
                out_specs=out_specs,
                out_shape=out_shape,
                compiler_params=pltriton.CompilerParams(
                    num_warps=4 if self.dim <= 64 else 8, num_stages=2
                ),
                interpret=self.interpret,
                name=name,
            )(first, count, *args)

        return run


def _forward(plan: _Plan, seed, position, qa, av, q, k, v, keys):
    """(out, lse) in the padded (rows, length, D) layout."""
    return plan.call(
        plan.KERNELS[0],
        by_key=False,
        outputs=[
            ((plan.rows, plan.t_pad, plan.dim), v.dtype, "q"),
            ((plan.rows, plan.t_pad, *plan.STAT_LANES), jnp.float32, "q"),
        ],  # fmt: skip
        name="block_sparse_forward",
    )(seed, position, qa, av, q, k, v, keys)


def _backward(plan: _Plan, seed, position, qa, av, q, k, v, keys, o, lse, do):
    """(dq, dk, dv, dposition, dqa, dav): FlashAttention-2's two passes, by key block for dk and
    dv (and T5's table), by query block for dq (and Shaw's per-index sums); the position
    gradients are zeros where the scheme has none."""
    delta = plan.stat(jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1))
    doa = qa  # a placeholder without Shaw
    if plan.shaw:
        doa = jnp.einsum("xtd,rd->xtr", do.astype(jnp.float32), av)
    args = (seed, position, qa, av, q, k, v, keys, do, lse, delta, doa)
    t5 = isinstance(plan.position, T5Buckets)
    key_blocks = plan.s_pad // plan.block_k
    outputs = [((plan.rows, plan.s_pad, plan.dim), k.dtype, "k")] * 2
    if t5:  # each program's share of its row's table gradient
        outputs.append(((plan.rows, key_blocks, 1, plan.position_width), jnp.float32, "program"))
    dk, dv, *dtable = plan.call(
        plan.KERNELS[1], by_key=True, outputs=outputs, name="block_sparse_dkdv"
    )(*args)
    outputs = [((plan.rows, plan.t_pad, plan.dim), q.dtype, "q")]
    if plan.shaw:  # the logits' gradient and the weights, summed per Shaw index
        outputs += [((plan.rows, plan.t_pad, plan.position.width), jnp.float32, "q")] * 2
    dq, *shaw_sums = plan.call(
        plan.KERNELS[2], by_key=False, outputs=outputs, name="block_sparse_dq"
    )(*args)
    dposition = dtable[0].sum(1).reshape(position.shape) if t5 else jnp.zeros_like(position)
    dqa, dav = jnp.zeros_like(qa), jnp.zeros_like(av)
    if plan.shaw:
        dqa, weight_sums = shaw_sums
        dav = jnp.einsum("xtr,xtd->rd", weight_sums, do.astype(jnp.float32))
    return dq, dk, dv, dposition, dqa, dav


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(plan, seed, position, qa, av, q, k, v, keys):
    return _forward(plan, seed, position, qa, av, q, k, v, keys)[0]


def _attention_fwd(plan, seed, position, qa, av, q, k, v, keys):
    o, lse = _forward(plan, seed, position, qa, av, q, k, v, keys)
    return o, (seed, position, qa, av, q, k, v, keys, o, lse)


def _attention_bwd(plan, residuals, do):
    dq, dk, dv, dposition, dqa, dav = _backward(plan, *residuals, do)
    return None, dposition, dqa, dav, dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def pallas_gpu_attention(q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band=None, **options) -> Array:
    """The kernels on a GPU (Triton): `run_kernels` with this module's plan. Blocks are powers
    of two of at least 16 (Triton's dot), and the head dim is padded to one (zeros change no dot
    product)."""
    return run_kernels(_Plan, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band, **options)


def run_kernels(
    plan_type: type[_Plan],
    q_BTHD: Array,
    k_BSHD: Array,
    v_BSHD: Array,
    key_mask_BS: Array | None,
    band: Band | None = None,
    *,
    alibi_slopes_H: np.ndarray | None = None,
    t5_table_NH: Array | None = None,
    t5_buckets: T5Buckets | None = None,
    shaw_RD: tuple[Array, Array] | None = None,
    dropout_rate: float = 0.0,
    dropout_key: Array | None = None,
    block_q: int = 0,
    block_k: int = 0,
    interpret: bool = False,
) -> Array:
    """softmax(q k^T / sqrt(D) + bias) v over the pairs `band` allows and real keys, with
    attention dropout when `dropout_key` is given; out_BTHD (v's dtype). The position terms:
    none, ALiBi's -slope_h |j - i| (`alibi_slopes_H`), T5's learned table_NH[bucket(j - i), h]
    (`t5_table_NH` with `t5_buckets`), or Shaw's (`shaw_RD` = (a^K, a^V), each (2 clip + 1, D),
    shared by heads: q_i.a^K_r / sqrt(D) added to the logits, sum_j w_ij a^V_r to the output,
    r = clip(j - i) + clip); differentiable in the learned tables.

    Runs the kernels of `plan_type` (the GPU's `_Plan` or a platform's subclass), at its tiles
    (block_q x block_k, 0 for its DEFAULT_BLOCK, rounded as it needs); `interpret` runs them on
    any platform (slow; for tests). Any lengths and head dims: the inputs are laid out as
    (batch x heads) rows and padded to whole blocks (padded keys masked, padded queries dropped).
    """
    band = Band() if band is None else band
    batch, q_len, heads, dim = q_BTHD.shape
    kv_len = k_BSHD.shape[1]
    rate = float(dropout_rate) if dropout_key is not None else 0.0
    block_q, block_k = plan_type.blocks(
        block_q or plan_type.DEFAULT_BLOCK, q_len, block_k or plan_type.DEFAULT_BLOCK, kv_len
    )
    # Each row's (b x heads + h) position parameters: ALiBi's slope or T5's table, padded.
    position, per_head = None, jnp.zeros((heads, 1), jnp.float32)
    if alibi_slopes_H is not None:
        position, per_head = "alibi", jnp.asarray(alibi_slopes_H, jnp.float32)[:, None]
    if t5_table_NH is not None:
        position, per_head = t5_buckets, t5_table_NH.astype(jnp.float32).T
        width = pl.next_power_of_2(per_head.shape[1])
        per_head = jnp.pad(per_head, ((0, 0), (0, width - per_head.shape[1])))
    if shaw_RD is not None:
        position = ShawClip(shaw_RD[0].shape[0] // 2)
    plan = plan_type(
        band=band, q_len=q_len, kv_len=kv_len, block_q=block_q, block_k=block_k, heads=heads,
        rows=batch * heads, dim=plan_type.padded_dim(dim),
        rate=rate, position=position, position_width=per_head.shape[1], interpret=interpret,
    )  # fmt: skip

    def rows(x_BLHD, length):
        pad = ((0, 0), (0, length - x_BLHD.shape[1]), (0, 0), (0, plan.dim - dim))
        return jnp.pad(x_BLHD, pad).transpose(0, 2, 1, 3).reshape(plan.rows, length, plan.dim)

    q = rows(q_BTHD * jnp.asarray(1.0 / math.sqrt(dim), q_BTHD.dtype), plan.t_pad)
    k, v = rows(k_BSHD, plan.s_pad), rows(v_BSHD, plan.s_pad)
    keys = jnp.ones((batch, kv_len), jnp.float32)
    if key_mask_BS is not None:
        keys = key_mask_BS.astype(jnp.float32)
    keys = jnp.pad(keys, ((0, 0), (0, plan.s_pad - kv_len)))
    seed = dropout_seed(dropout_key) if rate > 0.0 else jnp.zeros((1,), jnp.uint32)
    qa, av = jnp.zeros((1, 1, 1), jnp.float32), jnp.zeros((1, 1), jnp.float32)
    if shaw_RD is not None:  # q.a^K per row and index; a^V padded to (R, D)
        width, count = position.width, shaw_RD[0].shape[0]

        def padded(table_RD):
            return jnp.pad(table_RD.astype(jnp.float32), ((0, width - count), (0, plan.dim - dim)))

        qa = jnp.einsum("xtd,rd->xtr", q.astype(jnp.float32), padded(shaw_RD[0]))
        av = padded(shaw_RD[1])
    out = _attention(plan, seed, jnp.tile(per_head, (batch, 1)), qa, av, q, k, v, keys)
    out = out.reshape(batch, heads, plan.t_pad, plan.dim).transpose(0, 2, 1, 3)
    return out[:, :q_len, :, :dim]
