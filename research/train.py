"""Training and evaluation, top to bottom: config checks, optimizer, pure loss and step functions,
then `train_and_evaluate`, which wires task, model and loop together.

The model is a Flax NNX module split once into (graphdef, params, rest); the step functions take and
return plain pytrees, so they are pure and jit-compiled.
"""

import json
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from research import tasks
from research.errors import UserError, check_choice, check_positive
from research.metrics import MetricWriter
from research.models import build_model, validate_model_config
from research.tasks.pipeline import eval_batches, train_dataset

SCHEDULES = ("rsqrt", "cosine", "constant")
TEST_PARAMS = ("last", "best_val")


# ----------------------------------------------------------------------------- configuration


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the training fields; raises UserError naming the first bad field."""
    for field in ("batch_size", "eval_batch_size", "num_train_steps"):
        check_positive(f"config.{field}", config[field])
    for field in ("log_every_steps", "eval_every_steps"):
        check_positive(f"config.{field}", config[field], allow_zero=True)
    check_choice("config.test_params", config.test_params, TEST_PARAMS)
    check_choice("config.optimizer.schedule", config.optimizer.schedule, SCHEDULES)
    check_positive("config.optimizer.warmup_steps", config.optimizer.warmup_steps, allow_zero=True)
    if not config.optimizer.learning_rate > 0:
        raise UserError(
            f"config.optimizer.learning_rate={config.optimizer.learning_rate!r} must be > 0"
        )
    tasks.get_task(config.task)


def resolve_config(
    config: ml_collections.ConfigDict, task: tasks.Task
) -> ml_collections.ConfigDict:
    """A copy of `config` with the task's vocabulary and class count filled in, validated."""
    validate_config(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.vocab_size = task.vocab_size
    config.model.num_classes = task.num_classes
    validate_model_config(config.model)
    return config


# ----------------------------------------------------------------------------- optimizer


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """rsqrt: LRA's c * min(1, s/w) / sqrt(max(s, w)); cosine: linear warmup then cosine to 0."""
    rate, warmup = config.learning_rate, config.warmup_steps
    if config.schedule == "rsqrt":
        warmup = max(warmup, 1)

        def rsqrt(step):
            step = jnp.asarray(step, jnp.float32)
            return rate * jnp.minimum(1.0, step / warmup) * jax.lax.rsqrt(jnp.maximum(step, warmup))

        return rsqrt
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, rate, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1)
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, rate, max(warmup, 1)), optax.constant_schedule(rate)],
        [warmup],
    )


def create_optimizer(config: ml_collections.ConfigDict, num_steps: int):
    """AdamW (decoupled weight decay) on the schedule, with optional global-norm clipping."""
    opt = config.optimizer
    adamw = optax.adamw(
        learning_rate_schedule(opt, num_steps),
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
    )
    if opt.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), adamw)
    return adamw


# ----------------------------------------------------------------------------- state and steps


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes: the step count, parameters, optimizer state,
    the model's non-parameter state (`rest`) and the base key from which dropout keys derive."""

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    dropout_key: jax.Array


def create_train_state(
    config: ml_collections.ConfigDict, optimizer
) -> tuple[nnx.GraphDef, TrainState]:
    """Initialises the model from `config.seed`; returns its graphdef and the initial state."""
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    model = build_model(config.model, rngs=nnx.Rngs(params=init_key))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=optimizer.init(params),
        dropout_key=dropout_key,
    )
    return graphdef, state


def classification_metrics(logits_BC: jax.Array, labels_B: jax.Array, weights_B: jax.Array) -> dict:
    """Weighted sums (not means), so batches and devices can be added up exactly."""
    losses_B = optax.softmax_cross_entropy_with_integer_labels(
        logits_BC.astype(jnp.float32), labels_B
    )
    correct_B = (jnp.argmax(logits_BC, axis=-1) == labels_B).astype(jnp.float32)
    return {
        "loss_sum": (losses_B * weights_B).sum(),
        "correct": (correct_B * weights_B).sum(),
        "count": weights_B.sum(),
    }


def make_train_step(graphdef: nnx.GraphDef, optimizer):
    """(state, batch) -> (state, metrics): one AdamW update on the mean cross-entropy."""

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_key = jax.random.fold_in(state.dropout_key, state.step)
        weights_B = jnp.ones(batch["label"].shape, jnp.float32)

        def loss_fn(params):
            model = nnx.merge(graphdef, params, state.rest)
            logits_BC = model(batch, deterministic=False, rngs=nnx.Rngs(dropout=dropout_key))
            sums = classification_metrics(logits_BC, batch["label"], weights_B)
            rest = nnx.state(model, nnx.Not(nnx.Param))
            return sums["loss_sum"] / sums["count"], (sums, rest)

        (loss, (sums, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": sums["correct"] / sums["count"],
            "grad_norm": optax.tree.norm(grads),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, rest=rest, opt_state=opt_state
        )
        return new_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef):
    """(params, rest, batch) -> weighted metric sums, dropout off."""

    def eval_step(params, rest, batch: dict) -> dict:
        model = nnx.merge(graphdef, params, rest)
        logits_BC = model(batch, deterministic=True)
        return classification_metrics(logits_BC, batch["label"], batch["weight"])

    return eval_step


def evaluate(eval_step, params, rest, batches) -> dict[str, float]:
    """Mean loss and accuracy over every example the batches hold."""
    totals = None
    for batch in batches:
        sums = eval_step(params, rest, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    return {
        "loss": float(totals["loss_sum"]) / count,
        "accuracy": float(totals["correct"]) / count,
        "examples": float(totals["count"]),
    }


# ----------------------------------------------------------------------------- the loop


def check_lengths(builder, config: ml_collections.ConfigDict) -> None:
    """Refuses, before compiling, a dataset whose longest input exceeds config.model.max_len."""
    longest = int(builder.info.metadata.get("max_length", 0))
    if longest > config.model.max_len and not config.truncate:
        raise UserError(
            f"task {config.task} has inputs of up to {longest} tokens but config.model.max_len="
            f"{config.model.max_len}; raise config.model.max_len or set config.truncate=True"
        )


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    history = jax.device_get(history)
    return {name: float(np.mean([m[name] for m in history])) for name in history[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`; writes metrics.jsonl, tensorboard/, results.json.

    Returns the final results: test accuracy and loss, the last validation scores, and which
    parameters (last or best-validation) the test score belongs to.
    """
    task = tasks.get_task(config.task)
    config = resolve_config(config, task)
    builder = tasks.prepare_builder(task, config.task_options, config.data_dir)
    check_lengths(builder, config)
    sources = tasks.load_sources(builder)

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as file:
        file.write(config.to_json(indent=2))

    optimizer = create_optimizer(config, config.num_train_steps)
    graphdef, state = create_train_state(config, optimizer)
    train_step = jax.jit(make_train_step(graphdef, optimizer), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(graphdef))
    data_options = dict(
        max_len=config.model.max_len,
        sequence_fields=task.sequence_fields,
        truncate=config.truncate,
    )

    def run_eval(split: str, params) -> dict[str, float]:
        batches = eval_batches(sources[split], batch_size=config.eval_batch_size, **data_options)
        return evaluate(eval_step, params, state.rest, batches)

    train_iter = iter(
        train_dataset(
            sources["train"], batch_size=config.batch_size, seed=config.seed, **data_options
        )
    )
    writer = MetricWriter(workdir)
    best_val, best_params, best_step = -1.0, None, 0
    history: list[dict] = []
    interval_start = time.perf_counter()
    progress = tqdm(total=config.num_train_steps, desc="train", unit="step", file=sys.stderr)
    for step in range(1, config.num_train_steps + 1):
        state, metrics = train_step(state, next(train_iter))
        history.append(metrics)
        progress.update(1)
        last_step = step == config.num_train_steps
        if (config.log_every_steps and step % config.log_every_steps == 0) or last_step:
            summary = _mean_metrics(history)
            if not np.isfinite(summary["loss"]):
                raise FloatingPointError(f"non-finite training loss at step {step}")
            summary["steps_per_second"] = len(history) / (time.perf_counter() - interval_start)
            writer.write(step, "train", summary)
            progress.set_postfix(
                loss=f"{summary['loss']:.4f}",
                acc=f"{summary['accuracy']:.3f}",
                steps_per_s=f"{summary['steps_per_second']:.1f}",
            )
            history, interval_start = [], time.perf_counter()
        if (config.eval_every_steps and step % config.eval_every_steps == 0) or last_step:
            val = run_eval("validation", state.params)
            writer.write(step, "validation", val)
            progress.write(
                f"step {step}: validation loss {val['loss']:.4f} accuracy {val['accuracy']:.4f}"
            )
            if val["accuracy"] > best_val:
                best_val, best_step = val["accuracy"], step
                if config.test_params == "best_val":
                    best_params = jax.device_get(state.params)
            interval_start = time.perf_counter()
    progress.close()

    test_params = best_params if config.test_params == "best_val" else state.params
    test = run_eval("test", test_params)
    writer.write(config.num_train_steps, "test", test)
    writer.close()
    results = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_examples": test["examples"],
        "validation_accuracy": val["accuracy"],
        "best_validation_accuracy": best_val,
        "best_validation_step": best_step,
        "test_params": config.test_params,
        "test_params_step": best_step if config.test_params == "best_val" else step,
        "num_train_steps": config.num_train_steps,
    }
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(
        f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}, "
        f"{int(test['examples'])} examples, {config.test_params} parameters from step "
        f"{results['test_params_step']}); results in {os.path.join(workdir, 'results.json')}"
    )
    return results
