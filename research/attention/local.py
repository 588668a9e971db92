"""Local attention: sliding window and block-local, both O(N w) time and memory.

Both cut the sequence into blocks of b tokens and let each query block score only its own block and
its neighbour blocks, gathered side by side (keys_BNKHD, K = b * number of neighbours); a mask on
the relative position then keeps the band. No N x N array is built. The sequence is padded up to a
multiple of b with masked keys, so any length works.

Block-local groups are contiguous blocks (defined by the block-diagonal mask), not LRA's strided
groups.
"""

import jax
import jax.numpy as jnp
from jax import Array

from research.attention.base import SelfAttention
from research.attention.full import pad_to, positional_attention
from research.attention.relative import Position, make_position, relative_positions
from research.errors import check_positive


def _shift_blocks(x_BN: Array, shift: int) -> Array:
    """y[:, i] = x[:, i + shift], zero where i + shift falls outside the blocks."""
    if shift == 0:
        return x_BN
    n = x_BN.shape[1]
    pad = [(0, 0)] * x_BN.ndim
    pad[1] = (0, shift) if shift > 0 else (-shift, 0)
    padded = jnp.pad(x_BN, pad)
    return padded[:, shift : shift + n] if shift > 0 else padded[:, :n]


def blocked_attention(
    q_BTHD: Array,
    k_BTHD: Array,
    v_BTHD: Array,
    key_mask_BT: Array | None,
    *,
    block: int,
    neighbours: tuple[int, ...],
    max_distance: int | None,
    causal: bool,
    position: Position,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> Array:
    """Softmax attention of each block of `block` queries to the key blocks at the contiguous
    offsets `neighbours` (e.g. (-1, 0, 1)), limited to |j - i| <= max_distance when given and to
    j <= i when causal. Returns out_BTHD; cost O(T * block * len(neighbours))."""
    batch, length, heads, dim = q_BTHD.shape
    n = -(-length // block)
    if key_mask_BT is None:
        key_mask_BT = jnp.ones((batch, length), bool)
    blocks = lambda x: pad_to(x, n * block).reshape(batch, n, block, *x.shape[2:])
    gather = lambda x: jnp.concatenate([_shift_blocks(blocks(x), o) for o in neighbours], axis=2)
    q_BNbHD = blocks(q_BTHD)
    k_BNKHD, v_BNKHD = gather(k_BTHD), gather(v_BTHD)
    key_mask_BNK = gather(key_mask_BT.astype(bool))
    offset = neighbours[0] * block
    rel_bK = relative_positions(block, block * len(neighbours), offset)
    allowed_bK = jnp.ones(rel_bK.shape, bool)
    if max_distance is not None:
        allowed_bK = jnp.abs(rel_bK) <= max_distance
    if causal:
        allowed_bK = allowed_bK & (rel_bK <= 0)
    mask_BN1bK = key_mask_BNK[:, :, None, None, :] & allowed_bK
    out_BNbHD = positional_attention(
        q_BNbHD,
        k_BNKHD,
        v_BNKHD,
        mask_BN1bK,
        position,
        offset,
        dropout_rate=dropout_rate,
        dropout_key=dropout_key,
    )
    return out_BNbHD.reshape(batch, n * block, heads, -1)[:, :length]


class _Local(SelfAttention):
    """Shared option handling: a position scheme, as for full attention."""

    def _build_position(self, position, rope_base, t5_args, shaw_clip, rngs):
        num_buckets, max_distance, bidirectional = t5_args
        self.position = make_position(
            position,
            field=self.option_field(),
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            rope_base=rope_base,
            t5_num_buckets=num_buckets,
            t5_max_distance=max_distance,
            t5_bidirectional=bidirectional,
            shaw_clip=shaw_clip,
            rngs=rngs,
        )


class LocalAttention(_Local):
    """Sliding window: query i attends to keys j with |i - j| <= window (i - window <= j <= i when
    causal). Queries go in blocks of `window`, each scoring [previous, own, next] key blocks.

    Options: window (w), and a position scheme as for full attention.
    """

    name = "local"

    def __init__(
        self,
        *,
        window: int = 32,
        position: str = "none",
        rope_base: float = 10_000.0,
        t5_num_buckets: int = 32,
        t5_max_distance: int = 128,
        t5_bidirectional: bool = True,
        shaw_clip: int = 16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive(self.option_field("window"), window)
        self.window = window
        t5_args = (t5_num_buckets, t5_max_distance, t5_bidirectional)
        self._build_position(position, rope_base, t5_args, shaw_clip, kwargs["rngs"])

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        return blocked_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            key_mask_BS,
            block=self.window,
            neighbours=(-1, 0) if self.causal else (-1, 0, 1),
            max_distance=self.window,
            causal=self.causal,
            position=self.position,
            dropout_rate=self.dropout_rate,
            dropout_key=dropout_key,
        )


class BlockLocalAttention(_Local):
    """Block-local: non-overlapping blocks of `block_size` tokens attend within themselves, and with
    `neighbours` also to the previous and next block (previous only when causal).

    Options: block_size (b), neighbours, and a position scheme as for full attention.
    """

    name = "block_local"

    def __init__(
        self,
        *,
        block_size: int = 64,
        neighbours: bool = False,
        position: str = "none",
        rope_base: float = 10_000.0,
        t5_num_buckets: int = 32,
        t5_max_distance: int = 128,
        t5_bidirectional: bool = True,
        shaw_clip: int = 16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive(self.option_field("block_size"), block_size)
        self.block_size = block_size
        self.neighbours = bool(neighbours)
        t5_args = (t5_num_buckets, t5_max_distance, t5_bidirectional)
        self._build_position(position, rope_base, t5_args, shaw_clip, kwargs["rngs"])

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        neighbours = (0,)
        if self.neighbours:
            neighbours = (-1, 0) if self.causal else (-1, 0, 1)
        return blocked_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            key_mask_BS,
            block=self.block_size,
            neighbours=neighbours,
            max_distance=None,
            causal=self.causal,
            position=self.position,
            dropout_rate=self.dropout_rate,
            dropout_key=dropout_key,
        )
