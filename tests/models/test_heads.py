"""The LRA forms of the heads and masks: the dual-encoder head on [u, v], first-token pooling
without a CLS vector, and LRA's masking of every token 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import listops, retrieval
from research.errors import UserError
from research.models import MODELS, ModelConfig, build_model
from research.models.config import HEADS
from research.models.heads import PairClassifier, pool


def retrieval_model(**overrides):
    """LRA's Retrieval model (emb 128, mlp 512), one short layer so that it builds in seconds."""
    config = retrieval.get_config().model
    config.update(vocab_size=256, num_classes=2, max_len=16, num_layers=1)
    config.update(overrides)
    config = ModelConfig.from_config(config)
    return config, build_model(config, rngs=nnx.Rngs(0))


def pair_batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens1, tokens2 = rng.integers(1, 256, (2, 3, 16))
    tokens2[:, 10:] = 0  # padding at the end of the second document
    tokens1, tokens2 = jnp.asarray(tokens1), jnp.asarray(tokens2)
    return {"tokens1": tokens1, "mask1": tokens1 > 0, "tokens2": tokens2, "mask2": tokens2 > 0}


def test_lra_two_tower_head_is_dense_512_256_2_on_u_v():
    config, model = retrieval_model()
    assert isinstance(model.head, PairClassifier)
    kernels = [model.head.hidden, model.head.hidden2, model.head.logits]
    assert [layer.kernel.shape for layer in kernels] == [(256, 512), (512, 256), (256, 2)]

    batch = pair_batch()
    logits_BC = model(batch)
    assert logits_BC.shape == (3, 2)
    u_BE = model.encoder(batch["tokens1"], batch["mask1"], deterministic=True, rngs=None)[0][:, 0]
    v_BE = model.encoder(batch["tokens2"], batch["mask2"], deterministic=True, rngs=None)[0][:, 0]
    x = jnp.concatenate([u_BE, v_BE], axis=-1)
    for layer in kernels[:2]:
        x = jax.nn.relu(layer(x))
    np.testing.assert_allclose(logits_BC, model.head.logits(x), rtol=1e-5, atol=1e-5)


def test_first_pooling_creates_no_cls_vector():
    _, model = retrieval_model()
    assert model.encoder.embedding.cls is None
    assert model.encoder.embedding.length == 16  # max_len, not max_len + 1
    paths = [str(path) for path, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model))]
    assert paths and not [path for path in paths if "cls" in path]


def test_first_pooling_reads_the_first_real_token():
    encoded_BLE = jnp.arange(2 * 4, dtype=jnp.float32).reshape(2, 4, 1)
    mask_BL = jnp.array([[True, True, False, False], [False, True, True, False]])
    np.testing.assert_allclose(pool(encoded_BLE, mask_BL, "first")[:, 0], [0.0, 5.0])


def classifier(**overrides):
    config = listops.get_config("size=tiny").model
    config.update(vocab_size=16, num_classes=10, max_len=12, emb_dim=16, num_heads=2, qkv_dim=16)
    config.update(mlp_dim=32, num_layers=2)
    config.update(overrides)
    return build_model(ModelConfig.from_config(config), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("pool_kind", ["cls", "mean"])
def test_mask_zero_tokens_makes_a_zero_token_padding(pool_kind):
    tokens = np.random.default_rng(1).integers(1, 16, (2, 12))
    tokens[:, 3] = 0
    tokens = jnp.asarray(tokens)
    real = jnp.ones((2, 12), bool)
    padded = real.at[:, 3].set(False)
    model = classifier(pool=pool_kind, mask_zero_tokens=True)
    np.testing.assert_allclose(
        model({"tokens": tokens, "mask": real}),
        model({"tokens": tokens, "mask": padded}),
        rtol=1e-5,
        atol=1e-5,
    )
    # Without the option the zero token is an ordinary token.
    model = classifier(pool=pool_kind, mask_zero_tokens=False)
    assert not np.allclose(
        model({"tokens": tokens, "mask": real}), model({"tokens": tokens, "mask": padded})
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"two_tower_head": "nli"}, "config.model.two_tower_head='nli' is not valid; choose one"),
        ({"pool": "max"}, "choose one of: cls, mean, last, first"),
    ],
)
def test_bad_head_options_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message) as error:
        retrieval_model(**overrides)
    assert "\n" not in str(error.value)


def test_every_head_name_is_a_model():
    """`config.model.head` is checked against HEADS (research/models/config.py); each names a
    model class in the registry."""
    assert tuple(MODELS) == HEADS
