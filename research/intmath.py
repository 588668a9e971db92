"""Integer rounding shared by the attention kernels' tiling and the data pipeline's batching."""


def ceil_div(a: int, b: int) -> int:
    """The number of blocks of b that cover a: ceil(a / b), exact for integers of any size."""
    return -(-a // b)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return ceil_div(n, multiple) * multiple
