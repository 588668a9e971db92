"""Linear attention (elu + 1) and Performer FAVOR+ against the quadratic form of their features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import assert_close, assert_same_function, build, normal, padding_mask, qkv
from flax import nnx

from research.attention.linear import favor_features, random_features

LENGTH = 13


def quadratic_form(module, q, k, v, key_mask):
    """sum_j A_ij v_j / sum_j A_ij with A = phi(q) phi(k)^T, masked: the O(N^2) definition."""
    phi_q, phi_k = module.features(q, k, key_mask)
    scores_BHTS = jnp.einsum("bthm,bshm->bhts", phi_q, phi_k)
    mask = key_mask[:, None, None, :]
    if module.causal:
        mask = mask & jnp.tril(jnp.ones((LENGTH, LENGTH), bool))
    scores_BHTS = jnp.where(mask, scores_BHTS, 0.0)
    den_BTH1 = jnp.moveaxis(scores_BHTS.sum(-1), 1, 2)[..., None]
    num_BTHD = jnp.einsum("bhts,bshd->bthd", scores_BHTS, v)
    return jnp.where(den_BTH1 > 0, num_BTHD / jnp.where(den_BTH1 > 0, den_BTH1, 1.0), 0.0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", ["linear", "performer"])
def test_equals_masked_quadratic_form(name, causal):
    """Both forms, a chunk (4) that does not divide the length, padding; forward and gradients."""
    options = {"chunk_size": 4} | ({"num_features": 16} if name == "performer" else {})
    module = build(name, options, causal=causal)
    q, k, v = qkv(0, length=LENGTH)
    key_mask = padding_mask([LENGTH, 6], LENGTH)
    ours = jax.jit(lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None))
    oracle = jax.jit(lambda q, k, v: quadratic_form(module, q, k, v, key_mask))
    assert_same_function(ours, oracle, (q, k, v), atol=1e-4)


Q_D = jnp.array([0.9, -0.4, 0.3, 0.5])
K_D = jnp.array([0.2, 0.7, -0.6, 0.4])
EXACT = float(jnp.exp(Q_D @ K_D / 2.0))  # exp(q.k / sqrt(D)), D = 4


def _kernel_estimates(num_features: int, orthogonal: bool = True, rows: int = 8192) -> np.ndarray:
    """phi(q).phi(k) of the raw FAVOR+ features, one estimate per independent draw of
    `num_features` rows: one projection of `rows` rows is cut into consecutive groups (orthogonal
    blocks are drawn independently, so groups of whole blocks are independent draws)."""
    w_MD = random_features(jax.random.key(0), rows, 4, orthogonal=orthogonal)
    phi = lambda x, is_query: favor_features(
        x[None, None, None], w_MD, is_query=is_query, stabilize=False
    )[0, 0, 0]
    products = np.asarray(phi(Q_D, True) * phi(K_D, False)) * rows  # undo the 1/sqrt(rows)^2
    return products.reshape(-1, num_features).mean(-1)


def test_favor_estimates_the_softmax_kernel_without_bias():
    for orthogonal in (True, False):
        estimates = _kernel_estimates(8, orthogonal)
        standard_error = estimates.std() / np.sqrt(len(estimates))
        assert abs(estimates.mean() - EXACT) < 4 * standard_error


def test_favor_error_falls_as_features_grow():
    errors = [float(np.mean((_kernel_estimates(m) - EXACT) ** 2)) for m in (4, 16, 64)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] < errors[0] / 5


@pytest.mark.parametrize("causal", [False, True])
def test_favor_stabiliser_cancels(causal):
    """With kernel_eps = 0 the stabilised features give exactly the unstabilised attention."""
    module = build("performer", {"num_features": 16, "kernel_eps": 0.0}, causal=causal)
    q, k, v = qkv(1, length=LENGTH)
    key_mask = padding_mask([LENGTH, 6], LENGTH)
    w_MD = module.projection[...]
    raw = lambda x, is_query: favor_features(x, w_MD, is_query=is_query, stabilize=False)

    class Raw:
        causal = module.causal

        def features(self, q, k, key_mask):
            return raw(q, True), raw(k, False)

    ours = jax.jit(lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None))
    oracle = jax.jit(lambda q, k, v: quadratic_form(Raw(), q, k, v, key_mask))
    assert_close(ours(q, k, v), oracle(q, k, v), atol=1e-4)


def test_performer_redraw_policy():
    x = normal(0, (2, LENGTH, 16))
    key_mask = padding_mask([LENGTH, 7], LENGTH)
    call = nnx.jit(
        lambda m, x, key: m(x, key_mask, deterministic=False, rngs=nnx.Rngs(dropout=key))
    )
    one, two = jax.random.key(1), jax.random.key(2)
    fixed = build("performer", {"num_features": 8, "redraw": "never"})
    redrawn = build("performer", {"num_features": 8, "redraw": "step"})
    evaluation = nnx.jit(lambda m, x: m(x, key_mask))
    # "never": training sees the stored features; "step": each dropout key draws new ones, while
    # evaluation still uses the stored draw. The features are state, not trained parameters.
    np.testing.assert_allclose(call(fixed, x, one), evaluation(fixed, x), atol=1e-6)
    assert not np.allclose(call(redrawn, x, one), call(redrawn, x, two))
    np.testing.assert_array_equal(call(redrawn, x, one), call(redrawn, x, one))
    np.testing.assert_allclose(evaluation(redrawn, x), evaluation(fixed, x), atol=1e-6)
    assert "projection" not in nnx.state(redrawn, nnx.Param)
    assert "projection" in nnx.state(redrawn, nnx.Not(nnx.Param))
