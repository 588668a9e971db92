"""Full attention against jax.nn.dot_product_attention: forward, gradients, masks, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_testing import (
    assert_close,
    assert_same_function,
    build,
    normal,
    output_and_grads,
    padding_mask,
    qkv,
    reference,
)
from flax import nnx

from research.attention import dot_product_attention
from research.attention.sparsity import Band


@pytest.mark.parametrize("causal", [False, True])
def test_forward_and_gradients_match_jax(causal):
    q, k, v = qkv(0)
    key_mask = padding_mask([11, 6], 11)
    module = build("full", causal=causal)
    ours = jax.jit(lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None))
    pattern = Band(causal=True).dense(11, 11) if causal else None
    theirs = jax.jit(lambda q, k, v: reference(q, k, v, pattern, key_mask))
    assert_same_function(ours, theirs, (q, k, v))


def test_bias_matches_jax():
    q, k, v = qkv(1)
    bias = normal(5, (2, 2, 11, 11))
    key_mask = padding_mask([9, 11], 11)
    mask = Band().mask(key_mask, 11, 11)
    ours = jax.jit(dot_product_attention)(q, k, v, mask, bias)
    assert_close(ours, jax.jit(reference)(q, k, v, None, key_mask, bias))


def test_fully_masked_query_row_gives_zeros_and_finite_gradients():
    q, k, v = qkv(2)
    key_mask = padding_mask([0, 7], 11)  # batch element 0 has no valid key at all
    module = build("full", causal=True)
    fn = lambda q, k, v: module.attend(q, k, v, key_mask, dropout_key=None)
    out, grads = output_and_grads(fn, (q, k, v))
    assert np.all(np.asarray(out[0]) == 0.0)
    assert np.isfinite(np.asarray(out)).all()
    for grad in grads:
        assert np.isfinite(np.asarray(grad)).all()
        assert np.all(np.asarray(grad[0]) == 0.0)


def test_dropout_only_in_training():
    x = normal(3, (2, 11, 16))
    key_mask = padding_mask([11, 8], 11)
    module = build("full", causal=False)
    module.dropout_rate = 0.5
    call = nnx.jit(
        lambda m, key: m(x, key_mask, deterministic=False, rngs=nnx.Rngs(dropout=key)),
    )
    evaluate = nnx.jit(lambda m: m(x, key_mask))
    train_out = call(module, jax.random.key(1))
    assert not np.allclose(evaluate(module), train_out)
    assert not np.allclose(call(module, jax.random.key(2)), train_out)
    assert jnp.isfinite(train_out).all()
