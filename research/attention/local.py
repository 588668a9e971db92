"""Local attention: sliding window and block-local, O(N w) time and memory on the kernel.

Both are softmax attention over a narrower `Band`; the block-sparse kernel visits only the tiles
the band touches, so cost grows linearly with N. Block-local groups are contiguous blocks (the
block-diagonal mask), not LRA's strided groups.
"""

import dataclasses

from research.attention.full import FullOptions, SoftmaxAttention
from research.attention.sparsity import Band
from research.errors import check_positive


@dataclasses.dataclass(frozen=True)
class LocalOptions(FullOptions):
    """Options of `local`: the window w, and how it runs and its position scheme as for full."""

    window: int = 32

    def check(self, field: str, head_dim: int | None = None) -> None:
        super().check(field, head_dim)
        check_positive(f"{field}.window", self.window)


@dataclasses.dataclass(frozen=True)
class BlockLocalOptions(FullOptions):
    """Options of `block_local`: block size b, whether neighbouring blocks are seen, and how it
    runs and its position scheme as for full."""

    block_size: int = 64
    neighbours: bool = False

    def check(self, field: str, head_dim: int | None = None) -> None:
        super().check(field, head_dim)
        check_positive(f"{field}.block_size", self.block_size)


class LocalAttention(SoftmaxAttention):
    """Sliding window: query i attends to keys j with |i - j| <= window (i - window <= j <= i when
    causal). Options: LocalOptions."""

    name = "local"
    Options = LocalOptions

    def band(self) -> Band:
        return Band(causal=self.causal, window=self.options.window)


class BlockLocalAttention(SoftmaxAttention):
    """Block-local: non-overlapping blocks of `block_size` tokens attend within themselves, and with
    `neighbours` also to the previous and next block (previous only when causal).
    Options: BlockLocalOptions."""

    name = "block_local"
    Options = BlockLocalOptions

    def band(self) -> Band:
        options = self.options
        return Band(causal=self.causal, block=options.block_size, neighbours=options.neighbours)
