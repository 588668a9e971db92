"""Position schemes: T5 buckets, ALiBi slopes, RoPE, Shaw's index and terms, against definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_close, build, normal, padding_mask, qkv, reference

from research.attention.relative import (
    RoPE,
    alibi_slopes,
    relative_positions,
    shaw_index,
    t5_bucket,
)


def test_t5_bucket_table():
    rel = jnp.array([-1, 0, 1, 10, 100, -1000])
    buckets = t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=True)
    np.testing.assert_array_equal(buckets, [1, 0, 17, 24, 31, 15])


def test_t5_unidirectional_buckets_ignore_the_future():
    rel = jnp.array([0, 1, 50, -1, -7, -8, -1000])
    buckets = t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=False)
    np.testing.assert_array_equal(buckets, [0, 0, 0, 1, 7, 8, 31])


def test_alibi_slopes():
    np.testing.assert_allclose(alibi_slopes(8), [2.0**-i for i in range(1, 9)])
    np.testing.assert_allclose(alibi_slopes(16), [2.0 ** (-0.5 * i) for i in range(1, 17)])
    # 12 heads: the 8-head slopes, then every other 16-head slope (2^-0.5, 2^-1.5, ...).
    expected_12 = [2.0**-i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)]
    np.testing.assert_allclose(alibi_slopes(12), expected_12, rtol=1e-6)


def test_rope_scores_depend_only_on_position_difference_and_keep_norms():
    rope = RoPE(head_dim=8, base=10_000.0)
    q, k, _ = qkv(0, batch=1, length=1, heads=1)
    at = lambda x, p: rope.apply(x, jnp.array([p]))
    score = lambda i, j: float(jnp.sum(at(q, i) * at(k, j)))
    for shift in (1, 17, 300):
        for i, j in ((0, 0), (3, 1), (2, 9)):
            assert score(i + shift, j + shift) == pytest.approx(score(i, j), abs=1e-4)
    assert score(5, 0) != pytest.approx(score(0, 5), abs=1e-3)
    for position in (0, 7, 1000):
        assert float(jnp.linalg.norm(at(q, position))) == pytest.approx(
            float(jnp.linalg.norm(q)), rel=1e-5
        )


def test_shaw_index_matrix():
    clip, length = 3, 9
    expected = np.array(
        [[min(max(j - i, -clip), clip) + clip for j in range(length)] for i in range(length)]
    )
    np.testing.assert_array_equal(shaw_index(relative_positions(length, length), clip), expected)


@pytest.mark.parametrize("offset", [0, -4])
def test_shaw_terms_equal_the_explicit_definition(offset):
    """q.a^K_ij / sqrt(D) and sum_j w_ij a^V_ij, built from the full (T, S, D) gather."""
    module = build("shaw", {"shaw_clip": 2})
    scheme = module.position
    q, _, _ = qkv(1, length=6)
    weights = jax.nn.softmax(normal(2, (2, 2, 6, 7)), axis=-1)
    index_TS = shaw_index(relative_positions(6, 7, offset), 2)
    a_key_TSD, a_value_TSD = scheme.key_RD[...][index_TS], scheme.value_RD[...][index_TS]
    logits = jnp.einsum("bthd,tsd->bhts", q, a_key_TSD) / jnp.sqrt(8.0)
    terms = jax.jit(lambda q, w: (scheme.logits_bias(q, 7, offset), scheme.value_term(w, offset)))
    logits_bias, value_term = terms(q, weights)
    assert_close(logits_bias, logits)
    assert_close(value_term, jnp.einsum("bhts,tsd->bthd", weights, a_value_TSD))


@pytest.mark.parametrize("name", ["alibi", "t5"])
@pytest.mark.parametrize("causal", [False, True])
def test_bias_schemes_match_jax_with_their_bias(name, causal):
    module = build(name, causal=causal)
    q, k, v = qkv(3)
    key_mask = padding_mask([11, 4], 11)
    bias = module.position.logits_bias(q, 11, 0)
    if name == "alibi":
        distance = np.abs(np.arange(11)[None, :] - np.arange(11)[:, None])
        assert_close(bias, -alibi_slopes(2)[:, None, None] * distance)
    bias_BHTS = jnp.broadcast_to(bias, (2, 2, 11, 11))
    pattern = np.tril(np.ones((11, 11), bool)) if causal else None
    ours = jax.jit(lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None))
    assert_close(ours(q, k, v), reference(q, k, v, pattern, key_mask, bias_BHTS))
