"""The per-position head: logits at every position, no CLS, causal masking holds, and the metrics
count only positions with a target (label >= 0)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import listops, recall
from research.errors import UserError
from research.models import ModelConfig, build_model
from research.tasks.pipeline import pad_example
from research.training.train import classification_metrics, resolve


def tagger(**overrides):
    config = recall.get_config("size=tiny").model
    config.vocab_size, config.num_classes = 20, 6
    config.update(max_len=10, emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, **overrides)
    return build_model(ModelConfig.from_config(config), rngs=nnx.Rngs(0))


def tokens(seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(1, 20, (2, 10)), jnp.int32)


@pytest.mark.parametrize("attention", ["full", "local", "linear"])
def test_causal_tagger_logits_depend_only_on_the_past(attention):
    model = tagger(attention=attention, causal=True)
    batch = {"tokens": tokens(), "mask": jnp.ones((2, 10), bool)}
    logits_BTC = model(batch)
    assert logits_BTC.shape == (2, 10, 6)
    changed = dict(batch, tokens=batch["tokens"].at[:, 6:].set(3))
    np.testing.assert_allclose(model(changed)[:, :6], logits_BTC[:, :6], atol=1e-5)
    assert not np.allclose(model(changed)[:, 6:], logits_BTC[:, 6:], atol=1e-5)


def test_bidirectional_tagger_sees_the_future_and_has_no_cls():
    model = tagger(causal=False)
    assert model.encoder.embedding.cls is None
    batch = {"tokens": tokens(), "mask": jnp.ones((2, 10), bool)}
    changed = dict(batch, tokens=batch["tokens"].at[:, 9].set(3))
    assert not np.allclose(model(changed)[:, 0], model(batch)[:, 0], atol=1e-5)


def test_metrics_count_only_positions_with_a_target():
    rng = np.random.default_rng(0)
    logits_BTC = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    labels_BT = jnp.asarray([[-1, 2, -1, 0, -1], [1, -1, -1, -1, 3], [-1, -1, -1, -1, -1]])
    weights_B = jnp.asarray([1.0, 1.0, 0.0])  # the last row is an evaluation filler row
    sums = classification_metrics(logits_BTC, labels_BT, weights_B)
    scored = [(0, 1), (0, 3), (1, 0), (1, 4)]
    losses = [
        optax.softmax_cross_entropy_with_integer_labels(logits_BTC[b, t], labels_BT[b, t])
        for b, t in scored
    ]
    correct = [int(jnp.argmax(logits_BTC[b, t]) == labels_BT[b, t]) for b, t in scored]
    assert float(sums["count"]) == 4
    np.testing.assert_allclose(sums["loss_sum"], sum(losses), rtol=1e-6)
    assert float(sums["correct"]) == sum(correct)


def test_per_position_labels_are_cut_and_padded_like_the_tokens():
    example = {"tokens": np.arange(1, 5), "label": np.array([-1, 3, -1, 2], np.int8)}
    out = pad_example(example, max_len=6, sequence_fields=("tokens",))
    np.testing.assert_array_equal(out["label"], [-1, 3, -1, 2, -1, -1])
    out = pad_example(example, max_len=3, sequence_fields=("tokens",), truncate=True)
    np.testing.assert_array_equal(out["label"], [-1, 3, -1])


@pytest.mark.parametrize(
    "config, head, message",
    [
        (recall.get_config(), "classifier", "task recall, which has a target at every position; "
         "choose one of: tagger"),
        (listops.get_config(), "tagger", "task listops, which has one label per example; choose "
         "one of: classifier, two_tower"),
    ],
)  # fmt: skip
def test_a_head_that_does_not_fit_the_task_is_a_user_error(config, head, message):
    config.model.head = head
    with pytest.raises(UserError, match=f"config.model.head='{head}' does not fit {message}"):
        resolve(config)
