"""Self-pretraining (research/training/pretrain.py): the objectives against hand-written oracles,
gradients included; every attention variant's causal form; the stage never reads a label or a
held-out input; stop and resume at every stage bit for bit; `init_from`; one-line errors."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import base
from research.attention import ATTENTION
from research.errors import UserError
from research.models import ModelConfig, TokenPredictor, encoder_has_cls
from research.training import checkpoint, pretrain, train
from research.training.metrics import read_metrics
from research.training.optim import OptimizerConfig
from research.training.steps import create_train_state
from tests.training.test_checkpoint import (
    assert_trees_equal,
    checkpoint_steps,
    saved_state,
    stop_with_sigterm_at,
)
from tests.training.workdir_testing import digest


def model_config(attention="full", *, head="classifier", pool="cls", causal=False, vocab=12):
    config = base.get_config()
    config.model.update(attention=attention, head=head, pool=pool, causal=causal)
    config.model.update(vocab_size=vocab, num_classes=3, max_len=16, emb_dim=16, num_heads=2)
    config.model.update(qkv_dim=16, mlp_dim=16, num_layers=2, dropout_rate=0.0)
    config.model.attention_dropout_rate = 0.0
    config.model.attention_options.local.window = 3
    config.model.attention_options.block_local.block_size = 4
    return ModelConfig.from_config(config.model)


def pretrain_config(objective: str, steps: int = 1, mask_rate: float = 0.3):
    config = base.get_config()
    config.pretrain.update(steps=steps, objective=objective, mask_rate=mask_rate)
    return pretrain.PretrainConfig.from_config(config)


def random_batch(vocab: int, batch: int = 3, length: int = 16, seed: int = 0, fields=("tokens",)):
    """Token fields with padding at the end of every row but the first (a full row)."""
    rng = np.random.default_rng(seed)
    out = {}
    for field in fields:
        lengths = np.concatenate([[length], rng.integers(2, length, batch - 1)])
        out[field] = jnp.asarray(rng.integers(1, vocab, (batch, length)), jnp.int32)
        out[field.replace("tokens", "mask")] = jnp.asarray(np.arange(length) < lengths[:, None])
    return out


# ----------------------------------------------------------------------------- the objectives


def test_causal_targets_with_and_without_a_cls_vector():
    tokens = jnp.array([[5, 6, 7, 0]])
    mask = jnp.array([[True, True, True, False]])
    positions, labels = pretrain.causal_targets(tokens, mask, has_cls=True)
    assert positions == slice(0, 4)  # CLS predicts token 0, token t (at t + 1) predicts t + 1
    np.testing.assert_array_equal(labels, [[5, 6, 7, -1]])
    positions, labels = pretrain.causal_targets(tokens, mask, has_cls=False)
    assert positions == slice(0, 3)  # position t predicts token t + 1; token 0 is not predicted
    np.testing.assert_array_equal(labels, [[6, 7, -1]])


def test_masked_inputs_hide_only_real_tokens_at_the_rate_asked():
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, 50, (64, 256)), jnp.int32)
    mask = jnp.asarray(np.arange(256) < rng.integers(1, 257, 64)[:, None])
    corrupted, labels = pretrain.masked_inputs(
        tokens, mask, jax.random.PRNGKey(0), rate=0.15, mask_token=50
    )
    hidden = np.asarray(corrupted == 50)
    assert not (hidden & ~np.asarray(mask)).any()  # padding is never hidden
    np.testing.assert_array_equal(np.asarray(labels)[hidden], np.asarray(tokens)[hidden])
    assert (np.asarray(labels)[~hidden] == -1).all()
    np.testing.assert_array_equal(np.asarray(corrupted)[~hidden], np.asarray(tokens)[~hidden])
    rate = hidden.sum() / np.asarray(mask).sum()
    assert abs(rate - 0.15) < 0.01, rate


def oracle_loss(model, batch, objective, has_cls, hidden=None, mask_token=None):
    """The mean cross-entropy of the predicted tokens, written from the definitions: causal, each
    real token from the positions before it (with CLS in front, token 0 from CLS alone); masked,
    each hidden token from the sequence with the hidden ones replaced."""
    tokens, mask = np.asarray(batch["tokens"]), np.asarray(batch["mask"])
    inputs = np.where(hidden, mask_token, tokens) if objective == "masked" else tokens
    logits = model(jnp.asarray(inputs), jnp.asarray(mask))
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    terms = []
    for n, t in zip(*np.nonzero(mask), strict=True):
        if objective == "masked":
            if hidden[n, t]:
                terms.append(-log_probs[n, t + int(has_cls), tokens[n, t]])
        elif has_cls:
            terms.append(-log_probs[n, t, tokens[n, t]])  # position t holds CLS or token t - 1
        elif t > 0:
            terms.append(-log_probs[n, t - 1, tokens[n, t]])
    return jnp.mean(jnp.stack(terms))


@pytest.mark.parametrize(
    "objective,head,pool",
    [
        ("causal", "classifier", "cls"),
        ("causal", "tagger", "mean"),  # no CLS vector
        ("masked", "classifier", "cls"),
        ("masked", "tagger", "mean"),
    ],
)
def test_the_step_minimises_the_oracle_loss_with_its_gradient(objective, head, pool):
    """Loss and one SGD update (params - lr * gradient) against the oracle's, through the step."""
    pretraining = pretrain_config(objective)
    config = pretraining.model_config(model_config(head=head, pool=pool, vocab=13))
    has_cls = encoder_has_cls(config)
    sgd = optax.sgd(0.5)
    make = functools.partial(TokenPredictor, config)
    graphdef, state = create_train_state(make, 0, sgd, stream=pretrain.PRETRAIN_STREAM)
    step = pretrain.make_pretrain_step(
        graphdef, sgd, pretraining, sequence_fields=("tokens",), has_cls=has_cls, mask_token=12
    )
    batch = random_batch(12)
    new_state, metrics = jax.jit(step)(state, batch)

    hidden = None
    if objective == "masked":  # the step's own draw, from its documented key
        key = jax.random.fold_in(state.dropout_key, state.step)
        corrupted, _ = pretrain.masked_inputs(
            batch["tokens"], batch["mask"], jax.random.split(key)[0], rate=0.3, mask_token=12
        )
        hidden = np.asarray(corrupted == 12)
        assert hidden.any()

    def loss(params):
        model = nnx.merge(graphdef, params, state.rest)
        return oracle_loss(model, batch, objective, has_cls, hidden, mask_token=12)

    expected, grads = jax.value_and_grad(loss)(state.params)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    updated = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads)
    for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(updated), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_both_documents_of_a_two_tower_task_are_predicted():
    pretraining = pretrain_config("causal")
    config = pretraining.model_config(model_config(head="two_tower"))
    sgd = optax.sgd(0.1)
    graphdef, state = create_train_state(functools.partial(TokenPredictor, config), 0, sgd)
    fields = ("tokens1", "tokens2")
    step = pretrain.make_pretrain_step(
        graphdef, sgd, pretraining, sequence_fields=fields, has_cls=True, mask_token=12
    )
    batch = random_batch(12, fields=fields)
    _, metrics = jax.jit(step)(state, batch)
    assert int(metrics["predicted_tokens"]) == int(batch["mask1"].sum() + batch["mask2"].sum())


@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_the_causal_objective_runs_each_variant_in_its_causal_form(attention):
    """Changing tokens after position k leaves the pretraining model's outputs up to k alone, so
    no prediction sees the token it predicts; the masked objective's bidirectional form does
    see them."""
    config = model_config(attention)
    causal = pretrain_config("causal").model_config(config)
    assert causal.causal and not pretrain_config("masked").model_config(config).causal
    batch = random_batch(12, batch=2)
    changed = batch["tokens"].at[:, 9:].set((batch["tokens"][:, 9:] % 11) + 1)
    full_mask = jnp.ones_like(batch["mask"])
    for form, sees_later in ((causal, False), (config, True)):
        model = TokenPredictor(form, rngs=nnx.Rngs(0))
        before, after = model(batch["tokens"], full_mask), model(changed, full_mask)
        # with CLS at 0, position 9 holds token 8: causal, positions 0..9 see tokens 0..8 only
        unchanged = np.allclose(before[:, :10], after[:, :10], atol=1e-5)
        assert unchanged != sees_later
        assert not np.allclose(before[:, 10:], after[:, 10:], atol=1e-5)


def test_with_encoder_replaces_the_encoder_and_keeps_the_head():
    config = model_config("performer")  # Performer's random features are state beside params
    sgd = optax.sgd(0.1)
    _, task = create_train_state(functools.partial(TokenPredictor, config), 0, sgd)
    graphdef, source = create_train_state(functools.partial(TokenPredictor, config), 1, sgd)
    pretrained = {"params": source.params, "rest": source.rest}
    merged = pretrain.with_encoder(task, pretrained)
    assert jax.tree.structure(merged.params) == jax.tree.structure(task.params)
    assert_trees_equal(merged.params["encoder"], source.params["encoder"])
    assert_trees_equal(merged.params["vocabulary"], task.params["vocabulary"])
    assert_trees_equal(merged.rest, source.rest)
    assert jax.tree.leaves(source.rest), "performer has features outside its parameters"


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def pretraining(resumable):
    """`resumable` (dropout on: both stages' dropout must resume exactly) after 6 steps of masked
    pretraining."""
    resumable.pretrain.update(steps=6, objective="masked", mask_rate=0.2)
    resumable.pretrain.optimizer.warmup_steps = 2
    return resumable


def test_pretraining_then_training_stops_and_resumes_at_every_stage_bit_for_bit(
    pretraining, tmp_path, monkeypatch
):
    straight = train.train_and_evaluate(pretraining, str(tmp_path / "straight"))
    stopped = str(tmp_path / "stopped")
    # during pretraining, at the switch (pretraining's last step), during training
    for split, step, stage in (("pretrain", 3, "pretrain"), ("pretrain", 6, "pretrain")):
        with monkeypatch.context() as patch:
            stop_with_sigterm_at(patch, step, split)
            assert train.train_and_evaluate(pretraining, stopped) == {
                "preempted": True,
                "step": step,
                "stage": stage,
            }
    with monkeypatch.context() as patch:
        stop_with_sigterm_at(patch, 6)
        assert train.train_and_evaluate(pretraining, stopped) == {"preempted": True, "step": 6}
    resumed = train.train_and_evaluate(pretraining, stopped)

    assert resumed["pretraining"].pop("workdir") == stopped
    assert resumed == straight | {"pretraining": resumed["pretraining"]}
    assert (
        resumed["pretraining"] | {"workdir": str(tmp_path / "straight")} == straight["pretraining"]
    )
    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(stopped))
    pretrained = [os.path.join(d, "pretrain") for d in (tmp_path / "straight", stopped)]
    assert checkpoint_steps(pretrained[0]) == [4, 6]
    assert checkpoint_steps(pretrained[1]) == [3, 4, 6]  # 3: saved when the signal came
    assert_trees_equal(saved_state(pretrained[0]), saved_state(pretrained[1]))

    records = {name: read_metrics(str(tmp_path / name)) for name in ("straight", "stopped")}
    for split in ("pretrain", "train", "validation"):
        logged = [
            [(r["step"], r["loss"]) for r in records[name] if r["split"] == split]
            for name in ("straight", "stopped")
        ]
        assert dict(logged[0]) == dict(logged[1]), split
    assert [r["step"] for r in records["straight"] if r["split"] == "pretrain"] == [3, 6]
    startup = [r["resumed_from_step"] for r in records["stopped"] if r["split"] == "startup"]
    assert startup == [0, 6]
    pretrain_startup = [
        r["resumed_from_step"] for r in records["stopped"] if r["split"] == "pretrain_startup"
    ]
    assert pretrain_startup == [0, 3]  # at the switch nothing was left to pretrain

    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    record = results["pretraining"]
    assert record["objective"] == "masked" and record["steps"] == 6 and record["mask_rate"] == 0.2
    assert record["workdir"] == str(tmp_path / "straight")
    last = [r for r in records["straight"] if r["split"] == "pretrain"][-1]
    assert record["loss"] == last["loss"]

    before = digest(tmp_path / "straight")  # a finished run, run again, changes nothing
    assert train.train_and_evaluate(pretraining, str(tmp_path / "straight")) == straight
    assert digest(tmp_path / "straight") == before

    # init_from: a second run fine-tunes the same pretrained encoder with another learning rate
    other = ml_collections.ConfigDict(pretraining.to_dict())
    other.init_from = str(tmp_path / "straight")
    other.optimizer.learning_rate = 2e-3
    finetuned = train.train_and_evaluate(other, str(tmp_path / "finetuned"))
    assert finetuned["pretraining"]["workdir"] == str(tmp_path / "straight")
    assert not (tmp_path / "finetuned" / "pretrain").exists()
    assert digest(tmp_path / "straight") == before  # the source is only read
    same_lr = ml_collections.ConfigDict(other.to_dict())
    same_lr.optimizer.learning_rate = pretraining.optimizer.learning_rate
    assert train.train_and_evaluate(same_lr, str(tmp_path / "same")) == straight

    # init_from refuses another encoder, another pretraining, an unfinished pretraining
    for field, value, message in (
        ("model.emb_dim", 32, "pretrained under model.emb_dim=64, this run has 32"),
        ("pretrain.steps", 7, "pretrained under pretrain.steps=6, this run has 7"),
        ("model.attention", "rope", "model.attention='full', this run has 'rope'"),
    ):
        changed = ml_collections.ConfigDict(other.to_dict())
        *sections, name = field.split(".")
        target = changed
        for section in sections:
            target = target[section]
        target[name] = value
        with pytest.raises(UserError, match=message) as error:
            train.train_and_evaluate(changed, str(tmp_path / "refused"))
        assert "\n" not in str(error.value)
        assert not (tmp_path / "refused").exists()


def test_the_pretraining_stage_reads_no_label_and_no_held_out_input(pretraining, tmp_path):
    """The stage runs with every label of the training split and both held-out splits made
    unreadable: it never touches them."""

    class NoLabels:
        def __init__(self, source):
            self.source = source

        def __len__(self):
            return len(self.source)

        def __getitem__(self, index):
            return Unlabelled(self.source[index])

    class Unlabelled(dict):
        def __getitem__(self, key):
            assert key != "label", "the pretraining stage read a label"
            return super().__getitem__(key)

        def __contains__(self, key):
            return key != "label" and super().__contains__(key)

    class Untouchable:
        def __len__(self):
            raise AssertionError("the pretraining stage read a held-out split")

        def __getitem__(self, index):
            raise AssertionError("the pretraining stage read a held-out split")

    run = train.Run(pretraining, str(tmp_path / "run"))
    try:
        run.sources = {
            "train": NoLabels(run.sources["train"]),
            "validation": Untouchable(),
            "test": Untouchable(),
        }
        pretrained = run.pretrained()
    finally:
        run.close()
    assert set(pretrained) == {"params", "rest"}
    assert checkpoint_steps(tmp_path / "run" / "pretrain") == [4, 6]


def test_an_unfinished_pretraining_cannot_be_started_from(pretraining, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        stop_with_sigterm_at(patch, 3, "pretrain")
        train.train_and_evaluate(pretraining, str(tmp_path / "source"))
    other = ml_collections.ConfigDict(pretraining.to_dict())
    other.init_from = str(tmp_path / "source")
    with pytest.raises(UserError, match="holds pretrained 3 steps, not the 6") as error:
        train.train_and_evaluate(other, str(tmp_path / "run"))
    assert "\n" not in str(error.value)


def test_a_run_saved_before_pretraining_existed_still_matches_its_config():
    """A config.json without `pretrain` or `init_from` equals today's config without
    pretraining, whatever the (unused) pretraining settings; with pretraining it differs."""
    new = json.loads(base.get_config().to_json())
    old = {key: value for key, value in new.items() if key not in ("pretrain", "init_from")}
    assert checkpoint.config_differences(old, new, structural_only=False) == []
    new["pretrain"]["optimizer"]["learning_rate"] = 0.5  # inert: nothing is pretrained
    assert checkpoint.config_differences(old, new, structural_only=False) == []
    new["pretrain"]["steps"] = 10
    assert "pretrain.steps: 0 -> 10" in checkpoint.config_differences(old, new)


def test_the_masked_objective_adds_one_mask_token_to_the_vocabulary(tiny_listops):
    resolved = train.resolve(tiny_listops)
    tiny_listops.pretrain.update(steps=5, objective="masked")
    masked = train.resolve(tiny_listops)
    assert masked.model.vocab_size == resolved.model.vocab_size + 1 == masked.task.vocab_size + 1
    tiny_listops.pretrain.objective = "causal"
    assert train.resolve(tiny_listops).model.vocab_size == resolved.model.vocab_size


def test_pretraining_optimizer_errors_name_their_field():
    config = base.get_config()
    config.pretrain.optimizer.learning_rate = 0.0
    with pytest.raises(UserError, match=r"config.pretrain.optimizer.learning_rate=0.0 must be"):
        pretrain.PretrainConfig.from_config(config)
    assert OptimizerConfig.from_config(base.get_config().pretrain.optimizer).schedule == "constant"
    assert dataclasses.is_dataclass(pretrain_config("causal"))
