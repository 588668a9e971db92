"""Which (query, key) pairs a softmax variant lets meet, as data every kernel reads.

A `Band` is the mask a variant needs apart from key padding: causality, a sliding window and
block-local groups, alone or together. Kernels read it three ways: `allows` per element (inside a
tile), `dense` as a (T, S) array (the reference path and the tests), `key_blocks` as the
(query block, key block) pairs worth visiting, and `key_span` as the keys a query block can reach
when the band's reach is bounded, so no kernel spends work on a tile the mask empties.
"""

import dataclasses
import math

import numpy as np


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

    def key_blocks(self, q_len: int, kv_len: int, block_q: int, block_k: int) -> np.ndarray:
        """needed_NM: whether query block n and key block m share any allowed (i, j) pair.

        Exact for every band (each block pair is checked element by element on the host, once per
        shape), so the kernels skip exactly the tiles the mask empties.
        """
        n, m = -(-q_len // block_q), -(-kv_len // block_k)
        q_pos = np.arange(n * block_q).reshape(n, block_q)
        k_pos = np.arange(m * block_k).reshape(m, block_k)
        needed = np.zeros((n, m), bool)
        for qi in range(n):
            for ki in self._candidate_key_blocks(qi, block_q, block_k, m):
                allowed = self.allows(q_pos[qi][:, None], k_pos[ki][None, :])
                needed[qi, ki] = bool(allowed.any())
        return needed

    def _candidate_key_blocks(self, qi: int, block_q: int, block_k: int, m: int) -> range:
        """Key blocks that may touch query block qi by the band's reach (a superset)."""
        left, right = self.reach
        first_q, last_q = qi * block_q, (qi + 1) * block_q - 1
        lo = 0 if left is None else max(0, (first_q - left) // block_k)
        hi = m - 1 if right is None else min(m - 1, (last_q + right) // block_k)
        return range(lo, hi + 1)

    def key_span(self, block_q: int) -> tuple[int, int] | None:
        """(lo, length): for every query block [q0, q0 + block_q) aligned to block_q, the keys
        the band allows lie in [q0 + lo, q0 + lo + length); None when its reach is unbounded.

        Found on the host from one period of the band (block-local bands repeat every block),
        far from the sequence's start, so it holds for every block.
        """
        left, right = self.reach
        if left is None or right is None:
            return None
        period = block_q if self.block is None else math.lcm(block_q, self.block)
        base = period * (-(-(left + 1) // period) + 1)
        q_pos = base + np.arange(period)
        k_pos = np.arange(base - left - 1, base + period + right + 1)
        allowed = self.allows(q_pos[:, None], k_pos[None, :])
        lo, hi = 0, 0
        for start in range(0, period, block_q):
            keys = k_pos[allowed[start : start + block_q].any(0)]
            if keys.size:
                q0 = base + start
                lo, hi = min(lo, keys.min() - q0), max(hi, keys.max() - q0 + 1)
        return int(lo), int(hi - lo)
