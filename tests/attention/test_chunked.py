"""The memory-efficient exact path of full attention, and the choice of implementation."""

import jax
import jax.numpy as jnp
import pytest
from attention_testing import assert_close, assert_same_function, build, padding_mask, qkv
from flax import nnx

from research.attention.full import choose_implementation, fused_attention
from research.errors import UserError


def _pair(position: str, causal: bool, chunk_size: int = 4):
    """The same module (same parameters) with the dense and the chunked implementation."""
    options = {"position": position, "chunk_size": chunk_size}
    dense = build("full", {**options, "implementation": "dense"}, causal=causal)
    chunked = build("full", {**options, "implementation": "chunked"}, causal=causal)
    return dense, chunked


@pytest.mark.parametrize("causal", [False, True])
def test_equals_dense_with_ragged_length_and_fully_masked_chunks(causal):
    """Forward and gradients; dense gives zeros, with zero gradient, for rows with no valid key."""
    q, k, v = qkv(0, batch=3, length=13)  # 13 = 3 chunks of 4 + 1
    # Batch 1: keys 4..7 (one whole chunk) and the tail are padding; batch 2: every key.
    key_mask = padding_mask([13, 11, 0], 13).at[1, 4:8].set(False)
    dense, chunked = _pair("none", causal)
    f_dense = jax.jit(lambda q, k, v: dense.attend(q, k, v, key_mask, dropout_key=None))
    f_chunk = jax.jit(lambda q, k, v: chunked.attend(q, k, v, key_mask, dropout_key=None))
    assert_same_function(f_chunk, f_dense, (q, k, v))


@pytest.mark.parametrize("position", ["t5", "shaw"])
def test_equals_dense_with_position_schemes_including_parameter_gradients(position):
    """T5 (a bias with parameters) and Shaw (also a value term) at traced chunk offsets; RoPE acts
    before any chunking, and ALiBi's bias goes through the same hook as T5's."""
    q, k, v = qkv(1, length=10)
    key_mask = padding_mask([10, 7], 10)
    dense, chunked = _pair(position, causal=False, chunk_size=3)

    def loss(module, params):
        graphdef, _, rest = nnx.split(module, nnx.Param, ...)
        out = nnx.merge(graphdef, params, rest).attend(q, k, v, key_mask, dropout_key=None)
        return jnp.sum(out * jnp.sin(jnp.arange(out.size).reshape(out.shape)))

    params = nnx.state(dense, nnx.Param)
    value_d, grad_d = jax.jit(jax.value_and_grad(lambda p: loss(dense, p)))(params)
    value_c, grad_c = jax.jit(jax.value_and_grad(lambda p: loss(chunked, p)))(params)
    assert_close(value_c, value_d, atol=1e-4)
    for got, want in zip(jax.tree.leaves(grad_c), jax.tree.leaves(grad_d), strict=True):
        assert_close(got, want, atol=1e-4)


def test_auto_choice():
    common = dict(head_dim=64, length=4096, chunk_size=512)
    gpu_bf16 = dict(backend="gpu", dtype=jnp.bfloat16)
    pick = lambda **kw: choose_implementation("auto", **{**common, **kw})
    assert pick(**gpu_bf16, position="none", dropout=False) == "cudnn"
    assert pick(backend="gpu", dtype=jnp.float16, position="rope", dropout=False) == "cudnn"
    # Each missing condition falls back to the exact XLA paths.
    assert pick(backend="gpu", dtype=jnp.float32, position="none", dropout=False) == "chunked"
    assert pick(backend="cpu", dtype=jnp.bfloat16, position="none", dropout=False) == "chunked"
    assert pick(**gpu_bf16, position="shaw", dropout=False) == "chunked"
    assert pick(**gpu_bf16, position="none", dropout=True) == "chunked"
    assert pick(**gpu_bf16, position="none", dropout=False, head_dim=12) == "chunked"
    assert pick(backend="cpu", dtype=jnp.float32, position="none", dropout=False, length=512) == (
        "dense"
    )
    for requested in ("dense", "chunked", "cudnn"):
        explicit = choose_implementation(requested, **common, **gpu_bf16, position="t5", dropout=1)
        assert explicit == requested


def test_explicit_cudnn_is_checked_at_build_time():
    """Off a GPU, or with Shaw's value term, asking for cudnn fails before anything compiles."""
    field = r"attention_options\.full\.implementation='cudnn' is not usable"
    if jax.default_backend() == "gpu":
        assert build("full", {"implementation": "cudnn"}).implementation == "cudnn"
        with pytest.raises(UserError, match=field + ".*position"):
            build("full", {"implementation": "cudnn", "position": "shaw"})
    else:
        with pytest.raises(UserError, match=field + ".*needs a GPU"):
            build("full", {"implementation": "cudnn"})


@pytest.mark.parametrize("causal", [False, True])
def test_fused_call_plumbing_matches_dense(causal):
    """The cudnn path's call (mask layout, causal flag, empty sequences), run here with XLA."""
    q, k, v = qkv(3, batch=3)
    key_mask = padding_mask([11, 6, 0], 11)
    dense = build("full", causal=causal)
    ours = lambda q, k, v: fused_attention(q, k, v, key_mask, causal=causal, implementation="xla")
    want = lambda q, k, v: dense.attend(q, k, v, key_mask, dropout_key=None)
    assert_same_function(ours, want, (q, k, v))
