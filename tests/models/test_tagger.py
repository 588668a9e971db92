"""The per-position head: logits at every position, no CLS, causal masking holds, and the metrics
count only positions with a target (label >= 0); at the targets alone, the same loss and
gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import distance, listops, recall
from research import tasks
from research.errors import UserError
from research.models import ModelConfig, build_model
from research.tasks.pipeline import pad_example
from research.training.steps import classification_metrics
from research.training.train import resolve


def tagger(class_token_offset=None, **overrides):
    config = recall.get_config("size=tiny").model
    config.vocab_size, config.num_classes = 20, 6
    config.update(max_len=10, emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, **overrides)
    model_config = ModelConfig.from_config(config, class_token_offset=class_token_offset)
    return build_model(model_config, rngs=nnx.Rngs(0))


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


def test_labels_at_the_targets_alone_keep_their_positions():
    example = {"tokens": np.arange(1, 7), "label": np.array([-1, 3, -1, 2, -1, 0], np.int8)}
    out = pad_example(example, max_len=8, sequence_fields=("tokens",), max_targets=4)
    np.testing.assert_array_equal(out["label"], [3, 2, 0, -1])
    np.testing.assert_array_equal(out["target_positions"], [1, 3, 5, 0])
    out = pad_example(example, max_len=4, sequence_fields=("tokens",), truncate=True, max_targets=2)
    np.testing.assert_array_equal(out["label"], [3, 2])
    np.testing.assert_array_equal(out["target_positions"], [1, 3])
    with pytest.raises(ValueError, match="3 targets, more than 2"):
        pad_example(example, max_len=8, sequence_fields=("tokens",), max_targets=2)


@pytest.mark.parametrize("options", ["", "mix=64x4-128x8"])
def test_mqar_declares_its_most_targets_per_example(options):
    config = recall.get_config(f"size=tiny,{options}" if options else "size=tiny")
    task = tasks.get_task("recall").at_options(config.task_options)
    pairs = [pairs for _, pairs in config.task_options.mix] or [config.task_options.num_pairs]
    assert task.max_targets == max(pairs)


@pytest.mark.parametrize("causal", [True, False])
def test_logits_at_the_targets_give_every_position_s_loss_and_gradients(causal):
    """Oracle: the tagger at every position with labels [B, T], against the same parameters at
    the targets alone (the pipeline's compaction) with labels [B, K]: equal metric sums and
    gradients, for rows with fewer targets than K and a filler row of weight 0."""
    model = tagger(causal=causal)
    rng = np.random.default_rng(1)
    labels_BT = np.full((3, 10), -1, np.int32)
    labels_BT[0, [2, 5, 9]] = [1, 4, 0]
    labels_BT[1, [7]] = [5]
    labels_BT[2, [0, 3]] = [2, 2]
    weights_B = jnp.asarray([1.0, 1.0, 0.0])
    tokens_BT = jnp.asarray(rng.integers(1, 20, (3, 10)), jnp.int32)
    mask_BT = jnp.ones((3, 10), bool).at[1, 8:].set(False)
    compact = [
        pad_example(
            {"tokens": tokens_T, "label": labels_T},
            max_len=10,
            sequence_fields=("tokens",),
            max_targets=3,
        )
        for tokens_T, labels_T in zip(np.asarray(tokens_BT), labels_BT, strict=True)
    ]
    labels_BK = jnp.asarray(np.stack([c["label"] for c in compact]))
    positions_BK = jnp.asarray(np.stack([c["target_positions"] for c in compact]))
    graphdef, params = nnx.split(model)

    def sums(params, batch, labels):
        sums = classification_metrics(nnx.merge(graphdef, params)(batch), labels, weights_B)
        return sums["loss_sum"], sums

    every = {"tokens": tokens_BT, "mask": mask_BT}
    at_targets = dict(every, target_positions=positions_BK)
    (_, every_sums), every_grads = jax.value_and_grad(sums, has_aux=True)(params, every, labels_BT)
    (_, target_sums), target_grads = jax.value_and_grad(sums, has_aux=True)(
        params, at_targets, labels_BK
    )
    assert model(at_targets).shape == (3, 3, 6)
    assert float(target_sums["count"]) == float(every_sums["count"]) == 4
    for name in ("loss_sum", "correct"):
        np.testing.assert_allclose(target_sums[name], every_sums[name], rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        target_grads,
        every_grads,
    )


@pytest.mark.parametrize("at_targets", [False, True])
def test_tied_output_scores_each_class_with_its_token_embedding(at_targets):
    """tie_output (Zoology's lm_head = word embedding): class c's logit is the encoded vector
    dotted with token (offset + c)'s embedding, no bias, no output layer of its own; the loss's
    gradient reaches those embedding rows through both uses (input and output)."""
    model = tagger(class_token_offset=12, tie_output=True)
    assert model.logits is None
    batch = {"tokens": tokens(), "mask": jnp.ones((2, 10), bool)}
    if at_targets:
        batch["target_positions"] = jnp.asarray([[1, 4, 9], [0, 2, 3]], jnp.int32)
    graphdef, params = nnx.split(model)

    def tied(params):
        model = nnx.merge(graphdef, params)
        encoded_BTE, _ = model.encoder(
            batch["tokens"], batch["mask"], deterministic=True, rngs=None
        )
        if at_targets:
            encoded_BTE = encoded_BTE[jnp.arange(2)[:, None], batch["target_positions"]]
        table_CE = model.encoder.embedding.tokens.embedding[...][12:18]
        return encoded_BTE @ table_CE.T

    np.testing.assert_allclose(model(batch), tied(params), rtol=1e-6, atol=1e-6)
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 6, model(batch).shape[:2]))
    loss = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
    got = jax.grad(lambda p: loss(nnx.merge(graphdef, p)(batch)))(params)
    expected = jax.grad(lambda p: loss(tied(p)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6), got, expected)
    table_grad = np.asarray(got["encoder"]["embedding"]["tokens"]["embedding"][...])
    assert np.abs(table_grad[12:18]).sum() > 0


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        (listops.get_config(), {"tie_output": True}, "config.model.tie_output=True needs "
         r"config.model.head in \('tagger',\) \(a class per position\), not 'classifier'"),
        (distance.get_config(), {"tie_output": True}, "config.model.tie_output=True needs a task "
         "whose classes are tokens"),
    ],
)  # fmt: skip
def test_a_tie_that_cannot_hold_is_a_user_error(config, overrides, message):
    config.model.update(overrides)
    with pytest.raises(UserError, match=message):
        resolve(config)


def test_figure2_model_ties_its_output_to_the_values_embeddings():
    run = resolve(recall.get_config("pairs=4,width=64"))
    assert run.model.tie_output and run.model.init == "zoology"
    assert run.model.class_token_offset == 4_096 and run.model.num_classes == 4_096


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
