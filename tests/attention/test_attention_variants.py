"""Properties every registered variant must have, and the registry's errors.

Padded keys never change valid outputs; a causal mask lets nothing flow from later positions;
each variant trains under a jitted functional step (nnx.split into Param and the rest).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from attention_testing import build, normal, padding_mask
from flax import nnx

from configs import listops
from research.attention import ATTENTION, attention_class, default_options, make_attention
from research.errors import UserError

# Small windows, tiles and chunks, so the kernel's and the scans' loops run at this length (a
# causal length up to chunk_size + 2MD/(M + D) runs as one chunk: 10 here for linear and Performer).
KERNEL = {"implementation": "kernel", "block_q": 4, "block_k": 4}
SMALL = {
    "full": KERNEL,
    "local": {"window": 2, **KERNEL},
    "block_local": {"block_size": 4, "neighbours": True, **KERNEL},
    "linear": {"chunk_size": 2},
    "performer": {"chunk_size": 2, "num_features": 8},
    "shaw": {"shaw_clip": 2, **KERNEL},
}
LENGTH = 11


def _module(name, causal):
    return build(name, SMALL.get(name, {}), causal=causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_padding_and_causality(name, causal):
    module = _module(name, causal)
    key_mask = padding_mask([LENGTH, 7], LENGTH)
    call = nnx.jit(lambda m, x: m(x, key_mask))
    x = normal(0, (2, LENGTH, 16))
    out = call(module, x)
    assert np.isfinite(np.asarray(out)).all()
    # Rewriting padded tokens (batch 1, positions 7..) leaves every valid output unchanged.
    noisy = x.at[1, 7:].set(100.0 * normal(1, (LENGTH - 7, 16)))
    np.testing.assert_allclose(call(module, noisy)[1, :7], out[1, :7], atol=1e-5, rtol=1e-5)
    if causal:
        # Rewriting tokens 6.. leaves outputs 0..5 unchanged (the gradient form of this check, for
        # local attention's window, is in test_local.py).
        future = x.at[:, 6:].set(100.0 * normal(2, (2, LENGTH - 6, 16)))
        np.testing.assert_allclose(call(module, future)[:, :6], out[:, :6], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("local", {"window": 2, "position": "t5"}),
        ("linear", {"chunk_size": 4}),
        ("performer", {"num_features": 8, "redraw": "step"}),
    ],
)
def test_jitted_functional_train_step(name, options):
    """The pattern research/training/train.py uses: split, merge inside a jitted loss, update.
    (test_chunked.py does the same for full attention with T5 and Shaw parameters.)"""
    module = build(name, options)
    module.dropout_rate = 0.1
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    optimizer = optax.adam(1e-2)
    x = normal(0, (2, LENGTH, 16))
    key_mask = padding_mask([LENGTH, 5], LENGTH)

    @jax.jit
    def step(params, opt_state, key):
        def loss(params):
            model = nnx.merge(graphdef, params, rest)
            out = model(x, key_mask, deterministic=False, rngs=nnx.Rngs(dropout=key))
            return jnp.mean((out - 1.0) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = optimizer.init(params)
    losses = []
    for i in range(3):
        params, opt_state, value = step(params, opt_state, jax.random.key(i))
        losses.append(float(value))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"config\.model\.attention='nope'.*block_local.*performer"):
        attention_class("nope")
    with pytest.raises(
        UserError, match=r"attention_options\.local has unknown option\(s\) \['w'\]"
    ):
        make_attention("local", {"w": 3}, in_features=16, num_heads=2, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("local", {"window": 0}, "local.window=0"),
        ("local", {"position": "sinusoid"}, "local.position='sinusoid'"),
        ("block_local", {"block_size": -2}, "block_local.block_size=-2"),
        ("full", {"implementation": "flash"}, "full.implementation='flash'"),
        ("full", {"block_q": -1}, "full.block_q=-1"),
        ("local", {"implementation": "chunked"}, "local.implementation='chunked'"),
        ("full", {"position": "t5", "t5_num_buckets": 2}, "full.t5_num_buckets=2"),
        ("t5", {"t5_max_distance": 4}, "t5.t5_max_distance=4"),
        ("t5", {"t5_num_buckets": 31}, "t5.t5_num_buckets=31"),
        ("t5", {"t5_num_buckets": 16, "t5_max_distance": 3}, "t5.t5_max_distance=3"),
        ("rope", {"rope_base": 0.5}, "rope.rope_base=0.5"),
        ("shaw", {"shaw_clip": 0}, "shaw.shaw_clip=0"),
        ("linear", {"chunk_size": 0}, "linear.chunk_size=0"),
        ("performer", {"num_features": 0}, "performer.num_features=0"),
        ("performer", {"redraw": "epoch"}, "performer.redraw='epoch'"),
        ("performer", {"feature_chunk": 0}, "performer.feature_chunk=0"),
    ],
)
def test_bad_option_is_a_one_line_error_naming_the_field(name, options, field):
    with pytest.raises(UserError) as error:
        make_attention(name, options, in_features=16, num_heads=2, rngs=nnx.Rngs(0))
    message = str(error.value)
    assert "\n" not in message
    assert f"config.model.attention_options.{field}" in message


def test_rope_needs_an_even_head_dimension():
    with pytest.raises(UserError, match="rope.position=rope needs an even head dimension"):
        make_attention("rope", {}, in_features=6, num_heads=2, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_each_name_selects_its_variant_from_a_task_config(name):
    config = listops.get_config(f"attention={name}")
    assert config.model.attention == name
    options = config.model.attention_options[name].to_dict()
    assert options == default_options(name)
