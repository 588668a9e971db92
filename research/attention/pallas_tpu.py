"""The block-sparse flash kernel as a Pallas kernel for TPUs (Mosaic): what splash attention does
not serve (a position bias, Shaw's terms, attention dropout) with nothing T x S in memory.

`pallas_tpu_attention` has pallas_gpu_attention's arguments and conventions, and runs the same
custom VJP (pallas_gpu.run_kernels: FlashAttention-2's backward, the position gradients, the
layout as (batch x heads) rows) on TPU kernels. The computation per tile is the GPU kernel's; what
differs is how a TPU runs it:

- The grid is (rows, blocks, steps): each program is one (row, query block) in the forward and
  dq passes, one (row, key block) in the dk/dv pass, and its last axis steps through the run of
  blocks on the other side that the band needs (`Band.key_blocks`, a run per block). The runs'
  first blocks and lengths are scalar-prefetched, so the index maps fetch only the needed tiles
  (past a short run's end they repeat its last tile, which Pallas does not fetch again, and the
  step computes nothing). Accumulators live in VMEM scratch across the steps, as in jax's TPU
  flash attention; so non-causal windows and block-local bands cost O(T).
- Everything in a tile is 2-D (rows x lanes): positions from iotas, row statistics kept as
  (rows, 1) columns and stored lane-replicated (STAT_LANES), key padding as a (8, block_k) tile.
- No gathers: T5's table and Shaw's q.a^K are read at each pair's index by a select per index
  between the tile's least and greatest (one to three far from the diagonal), and per-index sums
  (T5's table gradient, Shaw's value term and gradients) are masked sums per index.
- Tiles: block_q a multiple of 8 (sublanes), block_k of 128 (lanes); the head dim as it is.

Dropout's keep bits are dropout.py's hash of (seed, row, query, key), integer arithmetic that
Mosaic lowers like any other, so the TPU drops the same weights as every other path.

Correctness is tested in interpret mode against dense attention (tests/attention/
test_pallas_tpu.py), and the three kernels lower to Mosaic for a TPU on the CPU. It has not run on
TPU hardware here (none was available): Mosaic's layout passes, which run only on a TPU, may still
refuse a shape, and its speed is unmeasured.
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from research.attention import pallas_gpu
from research.attention.dropout import drop_with_gradient, keep_bits, scale_kept
from research.attention.pallas_gpu import MASKED, ShawClip, T5Buckets
from research.attention.sparsity import Band
from research.intmath import round_up

LANES = 128  # a TPU vector register's lanes: block_k's multiple, the row statistics' width
SUBLANES = 8  # its sublanes: block_q's multiple, the key mask tile's rows
TPU_DTYPES = (jnp.float32, jnp.bfloat16)
DEFAULT_BLOCK = 128


def eligible(*, dtype) -> tuple[bool, str]:
    """(whether this kernel serves a call, why not): every band, position scheme and dropout,
    in f32 or bf16."""
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in TPU_DTYPES]:
        return False, f"dtype {jnp.dtype(dtype).name} is not one of f32, bf16"
    return True, ""


# ---------------------------------------------------------------------------------------------
# Tile helpers: 2-D values only, no gathers.


def _positions(q_block, k_block, block_q: int, block_k: int):
    """(q_pos, k_pos): each (block_q, block_k) int32, the tile's absolute positions."""
    shape = (block_q, block_k)
    q_pos = q_block * block_q + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    k_pos = k_block * block_k + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    return q_pos, k_pos


def _lane(table, b):
    """table_XP's column b as (X, 1): a masked lane sum (b is dynamic)."""
    lanes = jax.lax.broadcasted_iota(jnp.int32, table.shape, 1)
    return jnp.sum(jnp.where(lanes == b, table, 0.0), axis=1, keepdims=True)


def _index_range(index):
    """(least, greatest + 1) of an int tile: the loop bounds of the per-index selects and sums."""
    return jnp.min(index), jnp.max(index) + 1


def _at_index(table, index):
    """table[row, index] laid out on the tile (table_XP with X the tile's rows or 1): a select
    per index between the tile's least and greatest."""

    def pick(b, out):
        return jnp.where(index == b, _lane(table, b), out)

    return jax.lax.fori_loop(*_index_range(index), pick, jnp.zeros(index.shape, jnp.float32))


def _index_sums(x, index, sums):
    """sums_XP plus, per row of x, the sum of x over each index (sums[:, b] += x[index == b])."""
    lanes = jax.lax.broadcasted_iota(jnp.int32, sums.shape, 1)

    def add(b, sums):
        total = jnp.sum(jnp.where(index == b, x, 0.0), axis=1, keepdims=True)
        return sums + jnp.where(lanes == b, total, 0.0)

    return jax.lax.fori_loop(*_index_range(index), add, sums)


def _dot(a, b, contract=(1, 1)):
    """a . b contracting a's axis contract[0] with b's contract[1], in f32 (the MXU's output)."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _logits(q, k, q_pos, k_pos, keys_ref, band: Band, position, position_ref, qa_ref):
    """The tile's logits in f32, MASKED where the band or key padding forbids the pair; the
    position bias: ALiBi's from the row's slope, T5's from the row's table, Shaw's from the rows'
    q.a^K (qa_ref the query block's)."""
    s = _dot(q, k)
    if position == "alibi":
        s = s - position_ref[...] * jnp.abs(k_pos - q_pos).astype(jnp.float32)
    elif isinstance(position, T5Buckets):
        s = s + _at_index(position_ref[...], position.of(q_pos, k_pos))
    elif isinstance(position, ShawClip):
        s = s + _at_index(qa_ref[...], position.of(q_pos, k_pos))
    allowed = keys_ref[0:1, :] > 0
    if band != Band():
        allowed = allowed & band.allows(q_pos, k_pos, jnp)
    return jnp.where(allowed, s, MASKED)


def _weight_gradient(do, v, doa_ref, q_pos, k_pos, position):
    """dp: do.v_j, plus do.a^V_r with Shaw (doa_ref the query block's)."""
    dp = _dot(do, v)
    if isinstance(position, ShawClip):
        dp = dp + _at_index(doa_ref[...], position.of(q_pos, k_pos))
    return dp


def _lane_replicated(column):
    """A (rows, 1) column as a (rows, LANES) block."""
    return jnp.broadcast_to(column, (column.shape[0], LANES))


# ---------------------------------------------------------------------------------------------
# Kernels. Scalar-prefetched: first, count (per program block), seed. Refs: q/k/v/do tiles
# (block, D); lse/delta (block_q, LANES); keys (SUBLANES, block_k); position (1, P): ALiBi's slope
# or T5's table; qa/doa (block_q, R), av (R, D): Shaw's (one-element placeholders without it).


def _forward_kernel(
    first_ref, count_ref, seed_ref, position_ref, qa_ref, av_ref, q_ref, k_ref, v_ref, keys_ref,
    o_ref, lse_ref, acc_ref, top_ref, total_ref, sums_ref, *, band, block_q, block_k, rate,
    position, steps,
):  # fmt: skip
    row, qi, step = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    shaw = isinstance(position, ShawClip)

    @pl.when(step == 0)
    def _():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)
        top_ref[...] = jnp.full(top_ref.shape, MASKED, jnp.float32)
        total_ref[...] = jnp.zeros(total_ref.shape, jnp.float32)
        sums_ref[...] = jnp.zeros(sums_ref.shape, jnp.float32)

    @pl.when(step < count_ref[qi])
    def _():
        q_pos, k_pos = _positions(qi, first_ref[qi] + step, block_q, block_k)
        s = _logits(q_ref[...], k_ref[...], q_pos, k_pos, keys_ref, band, position,
                    position_ref, qa_ref)  # fmt: skip
        m_prev = top_ref[:, 0:1]
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
        correction = jnp.exp(m_prev - m_next)
        p = jnp.exp(s - m_next)
        total = total_ref[:, 0:1] * correction + jnp.sum(p, axis=1, keepdims=True)
        top_ref[...] = _lane_replicated(m_next)
        total_ref[...] = _lane_replicated(total)
        if rate > 0.0:
            p = scale_kept(p, keep_bits(seed_ref[0], row, q_pos, k_pos, rate), rate)
        v = v_ref[...]
        acc_ref[...] = acc_ref[...] * correction + _dot(p.astype(v.dtype), v, (1, 0))
        if shaw:  # the weights per Shaw index, rescaled online like acc
            sums_ref[...] = _index_sums(p, position.of(q_pos, k_pos), sums_ref[...] * correction)

    @pl.when(step == steps - 1)
    def _():
        acc = acc_ref[...]
        if shaw:
            acc = acc + _dot(sums_ref[...], av_ref[...], (1, 0))
        top, total = top_ref[:, 0:1], total_ref[:, 0:1]
        seen = top > 0.5 * MASKED  # rows with an allowed key
        total = jnp.where(seen, total, 1.0)
        o_ref[...] = jnp.where(seen, acc / total, 0.0).astype(o_ref.dtype)
        lse_ref[...] = _lane_replicated(jnp.where(seen, top + jnp.log(total), jnp.inf))


def _dkdv_kernel(
    first_ref, count_ref, seed_ref, position_ref, qa_ref, av_ref, q_ref, k_ref, v_ref, keys_ref,
    do_ref, lse_ref, delta_ref, doa_ref, dk_ref, dv_ref, *rest, band, block_q, block_k, rate,
    position, steps,
):  # fmt: skip
    """dk, dv of one key block; with T5, rest = (dtable_ref, dk_acc, dv_acc), the table's
    gradient from this key block (summed over key blocks and batch outside), else rest =
    (dk_acc, dv_acc)."""
    row, kb, step = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    t5 = isinstance(position, T5Buckets)
    *dtable_ref, dk_acc, dv_acc = rest

    @pl.when(step == 0)
    def _():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)
        if t5:
            dtable_ref[0][...] = jnp.zeros(dtable_ref[0].shape, jnp.float32)

    @pl.when(step < count_ref[kb])
    def _():
        q_pos, k_pos = _positions(first_ref[kb] + step, kb, block_q, block_k)
        q, do = q_ref[...], do_ref[...]
        s = _logits(q, k_ref[...], q_pos, k_pos, keys_ref, band, position, position_ref, qa_ref)
        p = jnp.exp(s - lse_ref[:, 0:1])  # 0 on rows with no key (lse = inf)
        dp = _weight_gradient(do, v_ref[...], doa_ref, q_pos, k_pos, position)
        p_dropped, dp = drop_with_gradient(p, dp, seed_ref[0], row, q_pos, k_pos, rate)
        dv_acc[...] += _dot(p_dropped.astype(do.dtype), do, (0, 0))
        ds = p * (dp - delta_ref[:, 0:1])
        dk_acc[...] += _dot(ds.astype(q.dtype), q, (0, 0))
        if t5:
            sums = _index_sums(
                ds,
                position.of(q_pos, k_pos),
                jnp.zeros((block_q, dtable_ref[0].shape[-1]), jnp.float32),
            )
            dtable_ref[0][...] += jnp.sum(sums, axis=0, keepdims=True)

    @pl.when(step == steps - 1)
    def _():
        dk_ref[...] = dk_acc[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)


def _dq_kernel(
    first_ref, count_ref, seed_ref, position_ref, qa_ref, av_ref, q_ref, k_ref, v_ref, keys_ref,
    do_ref, lse_ref, delta_ref, doa_ref, dq_ref, *rest, band, block_q, block_k, rate, position,
    steps,
):  # fmt: skip
    """dq of one query block; with Shaw, rest = (dqa_ref, weights_ref, dq_acc): the logits'
    gradient and the (dropped) weights summed per Shaw index, else rest = (dq_acc,)."""
    row, qi, step = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    shaw = isinstance(position, ShawClip)
    *shaw_refs, dq_acc = rest

    @pl.when(step == 0)
    def _():
        dq_acc[...] = jnp.zeros(dq_acc.shape, jnp.float32)
        for ref in shaw_refs:
            ref[...] = jnp.zeros(ref.shape, jnp.float32)

    @pl.when(step < count_ref[qi])
    def _():
        q_pos, k_pos = _positions(qi, first_ref[qi] + step, block_q, block_k)
        k = k_ref[...]
        s = _logits(q_ref[...], k, q_pos, k_pos, keys_ref, band, position, position_ref, qa_ref)
        p = jnp.exp(s - lse_ref[:, 0:1])
        dp = _weight_gradient(do_ref[...], v_ref[...], doa_ref, q_pos, k_pos, position)
        p_dropped, dp = drop_with_gradient(p, dp, seed_ref[0], row, q_pos, k_pos, rate)
        ds = p * (dp - delta_ref[:, 0:1])
        dq_acc[...] += _dot(ds.astype(k.dtype), k, (1, 0))
        if shaw:
            index = position.of(q_pos, k_pos)
            shaw_refs[0][...] = _index_sums(ds, index, shaw_refs[0][...])
            shaw_refs[1][...] = _index_sums(p_dropped, index, shaw_refs[1][...])

    @pl.when(step == steps - 1)
    def _():
        dq_ref[...] = dq_acc[...].astype(dq_ref.dtype)


# ---------------------------------------------------------------------------------------------
# The calls.


def _block(requested: int, length: int, multiple: int) -> int:
    """The tile along one axis: the requested size, or the length when shorter, rounded up to
    `multiple`."""
    return round_up(min(requested, length), multiple)


@dataclasses.dataclass(frozen=True)
class _TpuPlan(pallas_gpu._Plan):
    """pallas_gpu's plan with the TPU's kernels, tiles and layout."""

    KERNELS: ClassVar[tuple] = (_forward_kernel, _dkdv_kernel, _dq_kernel)
    STAT_LANES: ClassVar[tuple[int, ...]] = (LANES,)
    DEFAULT_BLOCK: ClassVar[int] = DEFAULT_BLOCK

    @staticmethod
    def blocks(block_q: int, q_len: int, block_k: int, kv_len: int) -> tuple[int, int]:
        return _block(block_q, q_len, SUBLANES), _block(block_k, kv_len, LANES)

    @staticmethod
    def padded_dim(dim: int) -> int:
        return dim  # a block may span the whole head dim, whatever its size

    def scratch(self, kernel) -> list:
        """The kernel's VMEM accumulators (f32), kept across its steps."""
        if kernel is _forward_kernel:
            sums = self.position.width if self.shaw else 1
            return [pltpu.VMEM((self.block_q, self.dim), jnp.float32)] + [
                pltpu.VMEM((self.block_q, LANES), jnp.float32)
            ] * 2 + [pltpu.VMEM((self.block_q, sums), jnp.float32)]  # fmt: skip
        if kernel is _dkdv_kernel:
            return [pltpu.VMEM((self.block_k, self.dim), jnp.float32)] * 2
        return [pltpu.VMEM((self.block_q, self.dim), jnp.float32)]

    def call(self, kernel, *, by_key: bool, outputs: list, name: str):
        """pallas_call of `kernel` on a grid of (rows, key blocks if by_key else query blocks,
        steps); the other side's tiles step through the program's run. Inputs and outputs as
        pallas_gpu._Plan.call's; outputs of side "program" are one (1, P) block per program."""
        first, count = self.runs(by_key=by_key)
        steps = max(int(np.max(count)), 1)
        heads = self.heads
        sizes = {"q": self.block_q, "k": self.block_k}
        blocked = "k" if by_key else "q"

        def block_of(side, i, step, first_ref, count_ref):
            if side == blocked:
                return i
            # Past the run's end, its last block again (not fetched twice; nothing computed).
            return first_ref[i] + jnp.minimum(step, jnp.maximum(count_ref[i] - 1, 0))

        def spec(side, *trailing):
            if side == "program":
                return pl.BlockSpec((None, None, *trailing), lambda r, i, s, *_: (r, i, 0, 0))
            zeros = (0,) * len(trailing)
            return pl.BlockSpec(
                (None, sizes[side], *trailing),
                lambda r, i, s, f, c, _: (r, block_of(side, i, s, f, c), *zeros),
            )

        keys = pl.BlockSpec(
            (None, SUBLANES, self.block_k),
            lambda r, i, s, f, c, _: (r // heads, 0, block_of("k", i, s, f, c)),
        )
        position = pl.BlockSpec((None, 1, self.position_width), lambda r, *_: (r, 0, 0))
        in_specs = self.operand_specs(spec, position, keys)
        out_specs = [spec(side, *shape[2:]) for shape, _, side in outputs]
        out_shape = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype, _ in outputs]
        settings = dict(band=self.band, block_q=self.block_q, block_k=self.block_k,
                        rate=self.rate, position=self.position, steps=steps)  # fmt: skip

        def run(seed, position, qa, av, q, k, v, keys_BS, *rest):
            batch = keys_BS.shape[0]
            args = (
                position.reshape(self.rows, 1, self.position_width), qa, av, q, k, v,
                jnp.broadcast_to(keys_BS[:, None, :], (batch, SUBLANES, keys_BS.shape[1])),
                *rest,
            )  # fmt: skip
            return pl.pallas_call(
                functools.partial(kernel, **settings),
                grid_spec=pltpu.PrefetchScalarGridSpec(
                    num_scalar_prefetch=3,
                    grid=(self.rows, len(first), steps),
                    in_specs=in_specs[: len(args)],
                    out_specs=out_specs,
                    scratch_shapes=self.scratch(kernel),
                ),
                out_shape=out_shape,
                compiler_params=pltpu.CompilerParams(
                    dimension_semantics=("parallel", "parallel", "arbitrary")
                ),
                interpret=self.interpret,
                name=name,
            )(first, count, seed, *args)

        return run


def pallas_tpu_attention(q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band=None, **options) -> Array:
    """The kernels on a TPU (Mosaic): pallas_gpu.run_kernels with this module's plan (the same
    arguments, position terms, dropout and gradients as the GPU's). block_q is rounded up to a
    multiple of 8 and block_k of 128, or to the padded length when shorter; the head dim is kept
    as it is."""
    return pallas_gpu.run_kernels(_TpuPlan, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, band, **options)
