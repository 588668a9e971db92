"""Which (query, key) pairs may meet, as data every attention path reads: the one mask vocabulary.

A `Band` is the mask a variant needs apart from key padding: causality, a sliding window and
block-local groups, alone or together. It is read four ways: `allows` per element (inside a
kernel's tile), `dense` as a (T, S) array, `mask` as that array joined with key padding into the
boolean mask dense scores take (the dense reference path, the attention-map weights of softmax and
linear attention, the benchmark's XLA baseline), and `key_blocks` / `key_span`: the (query block,
key block) pairs worth visiting and, when the band's reach is bounded, the keys a query block can
reach, both from `key_interval` (each query's allowed keys are one interval), so no kernel spends
work on a tile the mask empties.
"""

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np
from jax import Array

from research.intmath import ceil_div


@dataclasses.dataclass(frozen=True)
class Band:
    """Query i may see key j when every condition set here holds.

    causal:     j <= i.
    window:     |j - i| <= window (None: no limit).
    block:      i and j in the same block of `block` tokens (None: no blocks); with `neighbours`
                also in adjacent blocks (block(j) - block(i) in {-1, 0, 1}; with causal, -1 or 0).
    """

    causal: bool = False
    window: int | None = None
    block: int | None = None
    neighbours: bool = False

    def allows(self, q_pos, k_pos, xp=np):
        """Boolean array broadcast from integer positions q_pos, k_pos (numpy or jax.numpy)."""
        ok = xp.ones(xp.broadcast_shapes(np.shape(q_pos), np.shape(k_pos)), bool)
        if self.causal:
            ok = ok & (k_pos <= q_pos)
        if self.window is not None:
            ok = ok & (xp.abs(k_pos - q_pos) <= self.window)
        if self.block is not None:
            gap = k_pos // self.block - q_pos // self.block
            ok = ok & ((xp.abs(gap) <= 1) if self.neighbours else (gap == 0))
        return ok

    def dense(self, q_len: int, kv_len: int) -> np.ndarray:
        """mask_TS, True where query t may see key s."""
        return self.allows(np.arange(q_len)[:, None], np.arange(kv_len)[None, :])

    def mask(self, key_mask_BS: Array | None, q_len: int, kv_len: int) -> Array | None:
        """The band and key padding as one dense boolean mask for (B, H, T, S) scores: mask_B1TS
        (mask_11TS without a key mask, mask_B11S for the band of everything), True where query t
        may see key s; None when nothing is masked."""
        mask = None
        if self != Band():
            mask = jnp.asarray(self.dense(q_len, kv_len))[None, None]
        if key_mask_BS is not None:
            keys = key_mask_BS.astype(bool)[:, None, None, :]
            mask = keys if mask is None else mask & keys
        return mask

    @property
    def reach(self) -> tuple[int | None, int | None]:
        """(left, right): the largest i - j and j - i allowed, None when unbounded."""
        left = right = None
        if self.window is not None:
            left = right = self.window
        if self.block is not None:
            span = 2 * self.block - 1 if self.neighbours else self.block - 1
            left = span if left is None else min(left, span)
            right = span if right is None else min(right, span)
        if self.causal:
            right = 0
        return left, right

    def key_interval(self, q_len: int, kv_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(lo_T, hi_T): query i may see exactly keys lo..hi (none when lo > hi).

        Every condition a band sets allows an interval of keys per query (j <= i; |j - i| <= w;
        the same block, or it and its neighbours), so their intersection is one interval too.
        """
        return _key_interval(self, q_len, kv_len)

    def key_blocks(self, q_len: int, kv_len: int, block_q: int, block_k: int) -> np.ndarray:
        """needed_NM: whether query block n and key block m share any allowed (i, j) pair; exact,
        so the kernels skip exactly the tiles the mask empties."""
        n, m = ceil_div(q_len, block_q), ceil_div(kv_len, block_k)
        lo, hi = self.key_interval(q_len, kv_len)
        lo = np.pad(lo, (0, n * block_q - q_len), constant_values=1)  # padded queries see nothing
        hi = np.pad(hi, (0, n * block_q - q_len), constant_values=0)
        first_key = np.arange(m) * block_k
        overlap = (lo[:, None] <= first_key + block_k - 1) & (hi[:, None] >= first_key)
        return (overlap & (lo <= hi)[:, None]).reshape(n, block_q, m).any(1)

    def key_span(self, block_q: int) -> tuple[int, int] | None:
        """(lo, length): for every query block [q0, q0 + block_q) aligned to block_q, the keys
        the band allows lie in [q0 + lo, q0 + lo + length); None when its reach is unbounded.

        Found from the key intervals of one period of the band (block-local bands repeat every
        block), far from the sequence's start, so it holds for every block.
        """
        left, right = self.reach
        if left is None or right is None:
            return None
        period = block_q if self.block is None else math.lcm(block_q, self.block)
        base = period * (ceil_div(left + 1, period) + 1)
        first, last = self.key_interval(base + period, base + period + right + 1)
        lo, hi = 0, 0
        for start in range(base, base + period, block_q):
            rows = slice(start, start + block_q)
            seen = first[rows] <= last[rows]
            if seen.any():
                lo = min(lo, first[rows][seen].min() - start)
                hi = max(hi, last[rows][seen].max() - start + 1)
        return int(lo), int(hi - lo)


@functools.lru_cache(maxsize=64)
def _key_interval(band: Band, q_len: int, kv_len: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(q_len)
    lo, hi = np.zeros(q_len, np.int64), np.full(q_len, kv_len - 1, np.int64)
    if band.causal:
        hi = np.minimum(hi, i)
    if band.window is not None:
        lo, hi = np.maximum(lo, i - band.window), np.minimum(hi, i + band.window)
    if band.block is not None:
        reach = 1 if band.neighbours else 0
        first = (i // band.block - reach) * band.block
        last = (i // band.block + 1 + reach) * band.block - 1
        lo, hi = np.maximum(lo, first), np.minimum(hi, last)
    # The interval's ends must agree with Band.allows (guards against a field added to Band).
    rows, first, last = i[lo <= hi], lo[lo <= hi], hi[lo <= hi]
    ends = band.allows(rows, first) & band.allows(rows, last)
    before = band.allows(rows, first - 1) & (first > 0)
    after = band.allows(rows, last + 1) & (last < kv_len - 1)
    if not ends.all() or before.any() or after.any():
        raise NotImplementedError(f"{band} does not allow one interval of keys per query")
    return lo, hi
