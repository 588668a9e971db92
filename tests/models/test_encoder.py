"""Encoder and classifier: shapes, positions, pooling, and that padding never changes the logits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import listops
from research.errors import UserError
from research.models import ModelConfig, build_model
from research.models.config import POSITIONAL
from research.models.encoder import sinusoidal_positions
from research.models.heads import pool
from research.training.steps import cast_floating


def model_config(**overrides):
    config = listops.get_config("size=tiny").model
    config.vocab_size, config.num_classes = 16, 10
    config.update(max_len=12, emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_layers=2)
    config.update(overrides)
    return ModelConfig.from_config(config)


def batch(lengths, max_len=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.arange(max_len)[None] < np.array(lengths)[:, None]
    tokens = np.where(mask, rng.integers(1, 16, mask.shape), 0)
    return {"tokens": jnp.asarray(tokens, jnp.int32), "mask": jnp.asarray(mask)}


def test_sinusoidal_table():
    table = sinusoidal_positions(50, 8)
    assert table.shape == (50, 8)
    np.testing.assert_allclose(table[0, 0::2], 0.0, atol=1e-7)
    np.testing.assert_allclose(table[0, 1::2], 1.0)
    np.testing.assert_allclose(table[7, 2], np.sin(7 / 10000 ** (2 / 8)), rtol=1e-5)
    np.testing.assert_allclose(table[7, 3], np.cos(7 / 10000 ** (2 / 8)), rtol=1e-5)


def test_sinusoidal_positions_are_a_constant_of_the_step_not_model_state():
    model = build_model(model_config(positional="sinusoidal"), rngs=nnx.Rngs(0))
    assert jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))) == []
    inputs = batch([12, 5, 1])
    embed = lambda model, tokens, mask: model.encoder.embed(tokens, mask)[0]
    x_BLE = nnx.jit(embed)(model, inputs["tokens"], inputs["mask"])
    table_LE = sinusoidal_positions(13, 16)  # CLS pooling: max_len + 1 positions
    tokens_BTE = model.encoder.embedding.tokens(inputs["tokens"])
    np.testing.assert_array_equal(x_BLE[:, 1:], tokens_BTE + table_LE[None, 1:])


@pytest.mark.parametrize("positional", POSITIONAL)
def test_a_bfloat16_model_computes_in_bfloat16(positional):
    """compute_dtype=bfloat16 casts the parameters; no float32 constant (the sinusoidal table)
    may promote the activations back to float32, or attention never reaches cuDNN on a GPU."""
    model = build_model(model_config(positional=positional), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model = nnx.merge(graphdef, cast_floating(params, jnp.bfloat16), rest)
    inputs = batch([12, 5, 1])
    x_BLE, _ = model.encoder.embed(inputs["tokens"], inputs["mask"])
    encoded_BLE, _ = model.encoder(inputs["tokens"], inputs["mask"], deterministic=True, rngs=None)
    assert x_BLE.dtype == encoded_BLE.dtype == jnp.bfloat16


@pytest.mark.parametrize("pool_kind", ["cls", "mean", "last"])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "none"])
def test_logits_shape_and_padding_invariance(pool_kind, positional):
    model = build_model(model_config(pool=pool_kind, positional=positional), rngs=nnx.Rngs(0))
    inputs = batch([12, 5, 1])
    logits = model(inputs)
    assert logits.shape == (3, 10)
    scrambled = dict(inputs, tokens=jnp.where(inputs["mask"], inputs["tokens"], 7))
    np.testing.assert_allclose(model(scrambled), logits, atol=1e-5)


def test_mean_pool_ignores_padding():
    encoded = jnp.arange(2 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 1)
    mask = jnp.array([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(pool(encoded, mask, "mean")[:, 0], [0.5, 3.0])
    np.testing.assert_allclose(pool(encoded, mask, "cls")[:, 0], [0.0, 3.0])
    np.testing.assert_allclose(pool(encoded, mask, "last")[:, 0], [1.0, 3.0])


def test_dropout_only_in_training():
    model = build_model(model_config(dropout_rate=0.5), rngs=nnx.Rngs(0))
    inputs = batch([12, 6])
    np.testing.assert_allclose(model(inputs), model(inputs))
    train_a = model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=1))
    train_b = model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=2))
    assert not np.allclose(train_a, train_b)


def test_mlp_false_blocks_are_attention_alone():
    """config.model.mlp=False (Zoology's MQAR model): no MLP parameters, and each block is
    x + Attn(LN(x)), checked against that sum computed from the block's own modules."""
    model = build_model(model_config(mlp=False, dropout_rate=0.0), rngs=nnx.Rngs(0))
    names = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model))}
    assert not any("mlp" in name for name in names)
    block = model.encoder.blocks[0]
    x_BTE = jax.random.normal(jax.random.key(1), (2, 12, 16))
    mask_BT = batch([12, 6])["mask"]
    # The listops config's outer padding mask masks the queries too (LRA's).
    attended = block.attention(block.attention_norm(x_BTE), mask_BT, query_mask_BT=mask_BT)
    expected = x_BTE + attended
    got = block(x_BTE, mask_BT, deterministic=True, rngs=None)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    with_mlp = build_model(model_config(), rngs=nnx.Rngs(0))
    assert nnx.state(with_mlp.encoder.blocks[0].mlp, nnx.Param)


@pytest.mark.parametrize("num_layers", [2, 4])
def test_zoology_init_statistics(num_layers):
    """init="zoology" is Zoology's `_init_weights` (GPT-2's scheme), written apart from the
    module: every kernel N(0, 0.02), biases zero, and the two layers that write into the
    residual stream (attention's output projection, the MLP's second layer) N(0, 0.02 / sqrt(2
    num_layers)), at a width large enough for the sample std to sit within 3%."""
    config = model_config(init="zoology", emb_dim=256, qkv_dim=256, mlp_dim=512)
    config = dataclasses.replace(config, num_layers=num_layers)
    model = build_model(config, rngs=nnx.Rngs(0))
    residual_std = 0.02 / np.sqrt(2 * num_layers)
    for block in model.encoder.blocks:
        layers = {
            "query": (block.attention.query, 0.02),
            "key": (block.attention.key, 0.02),
            "value": (block.attention.value, 0.02),
            "out": (block.attention.out, residual_std),
            "mlp.up": (block.mlp.up, 0.02),
            "mlp.down": (block.mlp.down, residual_std),
        }
        for name, (layer, std) in layers.items():
            kernel = np.asarray(layer.kernel[...])
            np.testing.assert_allclose(kernel.std(), std, rtol=0.03, err_msg=name)
            assert abs(kernel.mean()) < 0.1 * std, name
            np.testing.assert_array_equal(np.asarray(layer.bias[...]), 0.0, err_msg=name)


def test_init_is_a_function_of_the_seed():
    a = nnx.state(build_model(model_config(), rngs=nnx.Rngs(3)), nnx.Param)
    b = nnx.state(build_model(model_config(), rngs=nnx.Rngs(3)), nnx.Param)
    assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pool": "max"}, "config.model.pool='max' is not valid; choose one of: cls, mean, last"),
        ({"attention": "nope"}, "config.model.attention='nope' is not valid; choose one of"),
        ({"positional": "rotary"}, "config.model.positional='rotary'"),
        ({"qkv_dim": 15}, "config.model.qkv_dim=15 must be divisible"),
        ({"num_layers": 0}, "config.model.num_layers=0"),
        ({"dropout_rate": 1.0}, "config.model.dropout_rate=1.0 must lie in"),
        ({"head": "regressor"}, "config.model.head='regressor'"),
    ],
)
def test_bad_model_config_is_a_one_line_error(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as error:
        build_model(model_config(**overrides), rngs=nnx.Rngs(0))
    assert "\n" not in str(error.value)
