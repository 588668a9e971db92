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
from research.attention.full import pad_to, positional_attention, positional_weights
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


def blocked_layout(
    q_BTHD: Array,
    kv_BTHD: tuple[Array, ...],
    key_mask_BT: Array | None,
    *,
    block: int,
    neighbours: tuple[int, ...],
    max_distance: int | None,
    causal: bool,
) -> tuple[Array, tuple[Array, ...], Array, int]:
    """The block layout both `blocked_attention` and `blocked_weights` score in.

    Returns (q_BNbHD, the arrays of `kv_BTHD` gathered as x_BNKHD, mask_BN1bK, offset): block n's
    K = block * len(neighbours) keys are the blocks n + o, o in `neighbours`, side by side, so key
    slot j of block n sits at position (n * block + offset + j), offset = neighbours[0] * block.
    The mask keeps valid keys within the band (|rel| <= max_distance when given, rel <= 0 when
    causal); slots before the start or past the end are masked.
    """
    batch, length = q_BTHD.shape[:2]
    n = -(-length // block)
    if key_mask_BT is None:
        key_mask_BT = jnp.ones((batch, length), bool)
    blocks = lambda x: pad_to(x, n * block).reshape(batch, n, block, *x.shape[2:])
    gather = lambda x: jnp.concatenate([_shift_blocks(blocks(x), o) for o in neighbours], axis=2)
    key_mask_BNK = gather(key_mask_BT.astype(bool))
    offset = neighbours[0] * block
    rel_bK = relative_positions(block, block * len(neighbours), offset)
    allowed_bK = jnp.ones(rel_bK.shape, bool)
    if max_distance is not None:
        allowed_bK = jnp.abs(rel_bK) <= max_distance
    if causal:
        allowed_bK = allowed_bK & (rel_bK <= 0)
    mask_BN1bK = key_mask_BNK[:, :, None, None, :] & allowed_bK
    return blocks(q_BTHD), tuple(gather(x) for x in kv_BTHD), mask_BN1bK, offset


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
    batch, length, heads, _ = q_BTHD.shape
    q_BNbHD, (k_BNKHD, v_BNKHD), mask_BN1bK, offset = blocked_layout(
        q_BTHD,
        (k_BTHD, v_BTHD),
        key_mask_BT,
        block=block,
        neighbours=neighbours,
        max_distance=max_distance,
        causal=causal,
    )
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
    return out_BNbHD.reshape(batch, -1, heads, out_BNbHD.shape[-1])[:, :length]


def blocked_weights(
    q_BTHD: Array,
    k_BTHD: Array,
    key_mask_BT: Array | None,
    *,
    block: int,
    neighbours: tuple[int, ...],
    max_distance: int | None,
    causal: bool,
    position: Position,
) -> Array:
    """The weights `blocked_attention` mixes values by, scattered into a dense weights_BHTS (zero
    outside the blocks each query scores): scored in the same block layout, so it shows exactly
    what the blocked path computes."""
    length = q_BTHD.shape[1]
    q_BNbHD, (k_BNKHD,), mask_BN1bK, offset = blocked_layout(
        q_BTHD,
        (k_BTHD,),
        key_mask_BT,
        block=block,
        neighbours=neighbours,
        max_distance=max_distance,
        causal=causal,
    )
    weights_BNHbK = positional_weights(q_BNbHD, k_BNKHD, mask_BN1bK, position, offset)
    batch, n, heads, _, slots = weights_BNHbK.shape
    # Query t of block n is row n*block + t; key slot j is column n*block + j of a canvas whose
    # column c holds key position c + offset (offset <= 0, so the canvas starts before key 0).
    rows_Nb1 = (jnp.arange(n)[:, None] * block + jnp.arange(block)[None, :])[..., None]
    cols_N1K = jnp.arange(n)[:, None, None] * block + jnp.arange(slots)[None, None, :]
    canvas = jnp.zeros((batch, heads, n * block, (n - 1) * block + slots), weights_BNHbK.dtype)
    canvas = canvas.at[:, :, rows_Nb1, cols_N1K].set(jnp.moveaxis(weights_BNHbK, 2, 1))
    return canvas[:, :, :length, -offset : -offset + length]


class _Local(SelfAttention):
    """Shared by both: a position scheme as for full attention, and attention (and its weights)
    in the block layout that `band()` describes."""

    def band(self) -> dict:
        """`blocked_attention`'s block, neighbours and max_distance for this variant's options."""
        raise NotImplementedError

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        return blocked_attention(
            q_BTHD,
            k_BSHD,
            v_BSHD,
            key_mask_BS,
            causal=self.causal,
            position=self.position,
            dropout_rate=self.dropout_rate,
            dropout_key=dropout_key,
            **self.band(),
        )

    def weights(self, q_BTHD, k_BSHD, key_mask_BS):
        """Dense weights_BHTS, zero outside the band or block. With position `shaw` the output
        also adds the relative value term, so weights @ v alone is not the output."""
        q_BTHD, k_BSHD = self.position.rotate(q_BTHD, k_BSHD)
        return blocked_weights(
            q_BTHD,
            k_BSHD,
            key_mask_BS,
            causal=self.causal,
            position=self.position,
            **self.band(),
        )

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

    def band(self) -> dict:
        return dict(
            block=self.window,
            neighbours=(-1, 0) if self.causal else (-1, 0, 1),
            max_distance=self.window,
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

    def band(self) -> dict:
        neighbours = (0,)
        if self.neighbours:
            neighbours = (-1, 0) if self.causal else (-1, 0, 1)
        return dict(block=self.block_size, neighbours=neighbours, max_distance=None)
