"""A Band's tile plans agree with its dense mask: the key blocks worth visiting are exactly those
with an allowed pair, and a query block's key span holds every key it may see."""

import numpy as np
import pytest

from research.attention.sparsity import Band
from research.intmath import ceil_div

BANDS = [
    Band(),
    Band(causal=True),
    Band(window=3),
    Band(window=3, causal=True),
    Band(block=4),
    Band(block=4, neighbours=True),
    Band(block=4, neighbours=True, causal=True),
    Band(window=2, block=4, neighbours=True),
]


@pytest.mark.parametrize("band", BANDS, ids=str)
@pytest.mark.parametrize(
    ("q_len", "kv_len", "block_q", "block_k"), [(13, 13, 4, 3), (13, 13, 5, 8), (20, 9, 4, 4)]
)
def test_key_blocks_are_the_blocks_with_an_allowed_pair(band, q_len, kv_len, block_q, block_k):
    n, m = ceil_div(q_len, block_q), ceil_div(kv_len, block_k)
    padded = np.zeros((n * block_q, m * block_k), bool)
    padded[:q_len, :kv_len] = band.dense(q_len, kv_len)
    want = padded.reshape(n, block_q, m, block_k).any((1, 3))
    np.testing.assert_array_equal(band.key_blocks(q_len, kv_len, block_q, block_k), want)


@pytest.mark.parametrize("band", BANDS, ids=str)
@pytest.mark.parametrize("block_q", [4, 6, 8])
def test_key_span_holds_every_allowed_key(band, block_q):
    span = band.key_span(block_q)
    if band.reach[0] is None or band.reach[1] is None:
        assert span is None
        return
    lo, length = span
    length_total = 96
    dense = band.dense(length_total, length_total)
    for q0 in range(0, length_total - block_q + 1, block_q):
        keys = np.nonzero(dense[q0 : q0 + block_q].any(0))[0]
        assert keys.min() >= q0 + lo and keys.max() < q0 + lo + length
