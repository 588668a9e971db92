"""Self-pretraining (Amos, Berant & Gupta, "Never Train from Scratch", ICLR 2024): before training
on the task, the encoder learns to predict the task's own training inputs, then the task is
trained from that encoder ("fine-tuning"). No extra data: only the training split's token fields
are read, never its labels and never the validation or test split.

`config.pretrain` (configs/base.py) chooses the objective:

- `causal`: next-token prediction through the variant's causal form (the encoder is built with
  `causal=True` for this stage; every variant's parameters are the same either way). With a CLS
  vector in front, position p (CLS at 0, token t at t + 1) predicts token p, so CLS predicts the
  first token; without one, position t predicts token t + 1.
- `masked`: each real token is replaced, with probability `mask_rate`, by a mask token (id = the
  task's vocabulary size: the model's vocabulary has one more row under this objective, in both
  stages) and predicted from the rest, in the model's own form (bidirectional unless
  `config.model.causal`).

The loss is the mean cross-entropy over the predicted tokens. Pixel tasks predict the 256 gray
levels as classes; a two-tower task's documents are both inputs of the shared encoder.

`config.init_from` names a workdir whose pretraining (the same `config.pretrain`, task and
encoder) this run starts from instead of pretraining itself, so several fine-tuning runs share one
pretrained encoder.
"""

import dataclasses
import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from research.errors import UserError, check_choice, check_positive
from research.flat import flatten
from research.models import ModelConfig
from research.training import checkpoint, parallel
from research.training.metrics import read_metrics
from research.training.optim import OptimizerConfig
from research.training.paths import workdir_path
from research.training.steps import cast_floating, classification_metrics

OBJECTIVES = ("causal", "masked")
#: Where a stage's checkpoints live in a workdir: the task's in checkpoints/, pretraining's here.
PRETRAIN_FOLDER = "pretrain"
#: The pretraining model is initialised from this stream of config.seed (create_train_state), so
#: the task model's own initialisation is the same with and without pretraining.
PRETRAIN_STREAM = 1
#: Fields of config.model that the encoder does not read: a run may start from an encoder
#: pretrained under other values of these (and of the dropout rates, which change no parameter).
HEAD_FIELDS = ("head", "pool", "two_tower_head", "tie_output", "num_classes")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """`config.pretrain` and `config.init_from`, checked (`from_config`). `steps` = 0 and no
    `init_from`: no pretraining (the task is trained from scratch)."""

    steps: int
    objective: str
    mask_rate: float
    optimizer: OptimizerConfig
    init_from: str

    @property
    def enabled(self) -> bool:
        """Whether the task starts from a pretrained encoder (pretrained here or in init_from)."""
        return self.steps > 0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "PretrainConfig":
        """Checks config.pretrain and config.init_from; a bad field is a one-line UserError."""
        pretrain = config.pretrain
        check_positive("config.pretrain.steps", pretrain.steps, allow_zero=True)
        check_choice("config.pretrain.objective", pretrain.objective, OBJECTIVES)
        if isinstance(pretrain.mask_rate, bool) or not 0.0 < pretrain.mask_rate < 1.0:
            raise UserError(
                f"config.pretrain.mask_rate={pretrain.mask_rate!r} must lie in (0, 1): the "
                "fraction of real tokens the masked objective hides"
            )
        if config.init_from and not pretrain.steps:
            raise UserError(
                f"config.init_from={config.init_from!r} needs config.pretrain as that workdir's "
                "run pretrained (config.pretrain.steps > 0), so that this run records which "
                "pretraining it starts from"
            )
        return cls(
            steps=pretrain.steps,
            objective=pretrain.objective,
            mask_rate=pretrain.mask_rate,
            optimizer=OptimizerConfig.from_config(pretrain.optimizer, "config.pretrain.optimizer"),
            init_from=config.init_from,
        )

    def extra_tokens(self) -> int:
        """Rows the model's vocabulary has beyond the task's: one mask token under `masked`."""
        return int(self.enabled and self.objective == "masked")

    def model_config(self, model: ModelConfig) -> ModelConfig:
        """The pretraining model's config: the task model's, causal under the causal objective."""
        return dataclasses.replace(model, causal=model.causal or self.objective == "causal")


# ----------------------------------------------------------------------------- the objective


def encoder_inputs(batch: dict, sequence_fields: Sequence[str]) -> tuple[jax.Array, jax.Array]:
    """(tokens_NT, mask_NT): every token field of `batch` stacked along the batch axis (the two
    documents of a two-tower task are both inputs of the shared encoder, N = 2B)."""
    tokens = [batch[field] for field in sequence_fields]
    masks = [batch[field.replace("tokens", "mask", 1)] for field in sequence_fields]
    return jnp.concatenate(tokens, axis=0), jnp.concatenate(masks, axis=0)


def causal_targets(tokens_NT, mask_NT, *, has_cls: bool):
    """(positions, labels_NP): the encoder positions that predict, and the token each predicts
    (-1 where that token is padding). With CLS, positions 0..T-1 predict tokens 0..T-1; without,
    positions 0..T-2 predict tokens 1..T-1."""
    if has_cls:
        return slice(0, tokens_NT.shape[1]), jnp.where(mask_NT, tokens_NT, -1)
    return slice(0, tokens_NT.shape[1] - 1), jnp.where(mask_NT[:, 1:], tokens_NT[:, 1:], -1)


def masked_inputs(tokens_NT, mask_NT, key, *, rate: float, mask_token: int):
    """(corrupted_NT, labels_NT): each real token hidden with probability `rate` (replaced by
    `mask_token`), and its label the original token there, -1 elsewhere."""
    hidden_NT = jax.random.bernoulli(key, rate, tokens_NT.shape) & mask_NT
    return jnp.where(hidden_NT, mask_token, tokens_NT), jnp.where(hidden_NT, tokens_NT, -1)


def make_pretrain_step(
    graphdef: nnx.GraphDef,
    optimizer,
    pretrain: PretrainConfig,
    *,
    sequence_fields: Sequence[str],
    has_cls: bool,
    mask_token: int,
    collectives: parallel.Collectives = parallel.JIT,
    compute_dtype="float32",
):
    """(state, batch) -> (state, metrics): one AdamW update of the token-prediction model
    (research/models/heads.py TokenPredictor) on the mean cross-entropy of the predicted tokens.

    `batch` holds only the token fields and their masks (pipeline.train_dataset with
    `inputs_only`): the stage cannot read a label.
    """
    first = int(has_cls)  # the encoder position of token 0

    def pretrain_step(state, batch: dict):
        key = collectives.device_key(jax.random.fold_in(state.dropout_key, state.step))
        mask_key, dropout_key = jax.random.split(key)
        tokens_NT, mask_NT = encoder_inputs(batch, sequence_fields)
        if pretrain.objective == "masked":
            inputs_NT, labels_NT = masked_inputs(
                tokens_NT, mask_NT, mask_key, rate=pretrain.mask_rate, mask_token=mask_token
            )
            positions = slice(first, first + tokens_NT.shape[1])
        else:
            inputs_NT = tokens_NT
            positions, labels_NT = causal_targets(tokens_NT, mask_NT, has_cls=has_cls)
        weights_N = jnp.ones(tokens_NT.shape[:1], jnp.float32)

        def loss_fn(params):
            model = nnx.merge(graphdef, cast_floating(params, compute_dtype), state.rest)
            logits_NLV = model(
                inputs_NT, mask_NT, deterministic=False, rngs=nnx.Rngs(dropout=dropout_key)
            )
            sums = classification_metrics(logits_NLV[:, positions], labels_NT, weights_N)
            rest = nnx.state(model, nnx.Not(nnx.Param))
            return sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), (sums, rest)

        (_, (sums, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads, sums = collectives.mean(grads), collectives.sum(sums)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        metrics = {
            "loss": sums["loss_sum"] / jnp.maximum(sums["count"], 1.0),
            "accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0),
            "grad_norm": optax.tree.norm(grads),
            "predicted_tokens": sums["count"],
        }
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            rest=rest,
            opt_state=opt_state,
        )
        return new_state, metrics

    return pretrain_step


# ----------------------------------------------------------------------------- the handoff


def with_encoder(state, pretrained: dict):
    """The task's initial `state` with its encoder (parameters and other state, e.g. Performer's
    random features) replaced by the pretrained model's (`pretrained`: its "params" and "rest")."""

    def replaced(tree: nnx.State, source: nnx.State) -> nnx.State:
        # raw_mapping: the nested plain dicts a State holds (iterating would wrap them in States,
        # a pytree of another structure than the compiled step's)
        mapping = dict(tree.raw_mapping)
        if "encoder" in source.raw_mapping:
            mapping["encoder"] = source.raw_mapping["encoder"]
        return nnx.State(mapping)

    return state.replace(
        params=replaced(state.params, pretrained["params"]),
        rest=replaced(state.rest, pretrained["rest"]),
    )


def finished_pretraining(config: ml_collections.ConfigDict, abstract_state) -> dict:
    """The "params" and "rest" of the last checkpoint of `config.init_from`'s finished pretraining,
    laid out as `abstract_state`'s (the pretraining model's TrainState); read without writing
    anything there. A one-line UserError when it stopped short of config.pretrain.steps or holds
    no checkpoint."""
    directory = workdir_path(config.init_from) / PRETRAIN_FOLDER / "checkpoints"
    wanted = {"params": abstract_state.params, "rest": abstract_state.rest}
    restored = checkpoint.restore_model_state(directory, wanted)
    step = None if restored is None else restored[1]
    if step != config.pretrain.steps:
        done = "no pretraining checkpoint" if step is None else f"pretrained {step} steps"
        raise UserError(
            f"config.init_from={config.init_from!r} holds {done}, not the "
            f"{config.pretrain.steps} config.pretrain.steps asks: run that workdir's command "
            "again to finish its pretraining first"
        )
    return restored[0]


def pretraining_record(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """What results.json records of the pretraining a run started from (None without one): the
    workdir it ran in, its objective, steps and peak learning rate, and its last logged loss and
    accuracy on the predicted tokens."""
    if not config.pretrain.steps:
        return None
    source = pretraining_source(config, workdir)
    record = {
        "workdir": str(source),
        "objective": config.pretrain.objective,
        "steps": config.pretrain.steps,
        "learning_rate": config.pretrain.optimizer.learning_rate,
    }
    if config.pretrain.objective == "masked":
        record["mask_rate"] = config.pretrain.mask_rate
    logged = [r for r in read_metrics(str(source)) if r["split"] == "pretrain"]
    if logged:
        record["loss"], record["accuracy"] = logged[-1]["loss"], logged[-1]["accuracy"]
    return record


def pretraining_source(config: ml_collections.ConfigDict, workdir: str):
    """The workdir whose pretraining the task starts from: `config.init_from`, else `workdir`."""
    return workdir_path(config.init_from or workdir)


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """Refuses `config.init_from` unless that workdir pretrained this task's encoder under this
    `config.pretrain`: one line naming the first field that differs, before anything is built."""
    source = workdir_path(config.init_from)
    saved_path = source / "config.json"
    if not saved_path.exists():
        raise UserError(
            f"config.init_from={config.init_from!r} holds no config.json: point it at the workdir "
            "of a run that pretrained (config.pretrain.steps > 0)"
        )
    saved, new = flatten(json.loads(saved_path.read_text())), flatten(json.loads(config.to_json()))
    for field in sorted(set(saved) | set(new)):
        if not must_match(field, config.model.attention):
            continue
        if saved.get(field, "<absent>") != new.get(field, "<absent>"):
            raise UserError(
                f"config.init_from={config.init_from!r} pretrained under {field}="
                f"{saved.get(field, '<absent>')!r}, this run has {new.get(field, '<absent>')!r}; "
                "a run starts only from an encoder pretrained on its own task, with its encoder "
                "and config.pretrain"
            )


def must_match(field: str, attention: str) -> bool:
    """Whether a run and the workdir it starts from (`init_from`) must agree on `field`: the
    task, the encoder's fields of config.model (the options of its `attention` variant, not of
    the others) and config.pretrain (its optimizer included)."""
    if field == "task" or field.startswith(("task_options.", "pretrain.")):
        return True
    if not field.startswith("model."):
        return False
    if field.startswith("model.attention_options."):
        return field.startswith(f"model.attention_options.{attention}.")
    name = field.removeprefix("model.").split(".")[0]
    return name not in HEAD_FIELDS + ("dropout_rate", "attention_dropout_rate")
