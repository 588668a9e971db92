"""Compiled temporary memory of local, linear and kernel attention grows linearly with length.

XLA's own accounting (`memory_analysis().temp_size_in_bytes`) of the jitted forward pass (and of
the backward pass too for the kernel, whose point is training), at lengths 512 and 2048
with a fixed window, feature count or chunk; dense attention is measured the same way to show the
measure sees a quadratic cost.
"""

import jax
import jax.numpy as jnp
import pytest
from attention_testing import build

LENGTHS = (512, 2048)


def temp_bytes(name, options, length, *, causal, backward):
    module = build(name, options, heads=1, dim=16, causal=causal)

    def forward(q, k, v, key_mask):
        return module.attend(q, k, v, key_mask, dropout_key=None)

    fn = jax.grad(lambda *args: forward(*args).sum(), argnums=(0, 1, 2)) if backward else forward
    spec = jax.ShapeDtypeStruct((1, length, 1, 16), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)
    compiled = jax.jit(fn).lower(spec, spec, spec, mask).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def growth(name, options, causal=False, backward=False):
    sizes = [temp_bytes(name, options, n, causal=causal, backward=backward) for n in LENGTHS]
    return [later / earlier for earlier, later in zip(sizes, sizes[1:], strict=False)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options", "causal", "backward"),
    [
        ("local", {"window": 16}, False, False),
        ("block_local", {"block_size": 16, "neighbours": True}, True, False),
        ("linear", {}, False, False),
        ("linear", {"chunk_size": 32}, True, False),
        ("performer", {"num_features": 32}, False, False),
        ("full", {"implementation": "kernel", "block_q": 64, "block_k": 64}, True, True),
        ("local", {"window": 16, "implementation": "kernel"}, True, True),
        ("alibi", {"implementation": "kernel", "block_q": 64, "block_k": 64}, False, True),
        ("shaw", {"implementation": "kernel", "block_q": 64, "block_k": 64}, False, True),
    ],
)
def test_memory_grows_linearly(name, options, causal, backward):
    # Four times the length, at most four times the temporary memory (plus slack for fixed buffers).
    assert all(ratio < 4.4 for ratio in growth(name, options, causal, backward))


def test_dense_memory_grows_quadratically():
    assert all(ratio > 14 for ratio in growth("full", {"implementation": "dense"}))
