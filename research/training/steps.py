"""Pure step functions and the state they carry: `TrainState`, the weighted classification
metrics, and the train and evaluation steps the loop compiles (research/training/parallel.py).

The model is a Flax NNX module split once into (graphdef, params, rest); the step functions take and
return plain pytrees, so they are pure and jit-compiled.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.training import parallel


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
    make_model: Callable[..., nnx.Module], seed: int, optimizer, *, stream: int = 0
):
    """Initialises `make_model(rngs=...)` (e.g. `functools.partial(build_model, model_config)`)
    from `seed` (config.seed); returns its graphdef and the initial state. `stream` > 0 draws
    from another stream of the same seed (the pretraining model's is 1), so that the task model
    starts as it would without pretraining.

    Model and optimizer state are built inside `jit`: run eagerly, each of the initialisers'
    few dozen small operations is compiled on its own, seconds of every run's startup on a CPU.
    """
    base_key = jax.random.PRNGKey(seed)
    if stream:
        base_key = jax.random.fold_in(base_key, stream)
    init_key, dropout_key = jax.random.split(base_key)
    model = nnx.jit(lambda key: make_model(rngs=nnx.Rngs(params=key)))(init_key)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=jax.jit(optimizer.init)(params),
        dropout_key=dropout_key,
    )
    return graphdef, state


def classification_metrics(logits_BC, labels_B, weights_B) -> dict:
    """Weighted sums (not means), so batches and devices can be added up exactly.

    Per-position tasks pass logits_BTC and labels_BT; a label < 0 marks a position without a
    target, which gets weight 0. `weights_B` (per example) broadcasts over the positions.
    """
    logits_BC = logits_BC.astype(jnp.float32)
    scored_B = labels_B >= 0
    labels_B = jnp.where(scored_B, labels_B, 0)
    weights_B = weights_B.reshape(weights_B.shape + (1,) * (labels_B.ndim - weights_B.ndim))
    weights_B = weights_B * scored_B
    losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, labels_B)
    correct_B = (jnp.argmax(logits_BC, axis=-1) == labels_B).astype(jnp.float32)
    return {
        "loss_sum": (losses_B * weights_B).sum(),
        "correct": (correct_B * weights_B).sum(),
        "count": weights_B.sum(),
    }


def cast_floating(tree, dtype):
    """The tree with its floating-point leaves cast to `dtype` (the compute precision)."""
    dtype = jnp.dtype(dtype)
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer,
    collectives: parallel.Collectives = parallel.JIT,
    compute_dtype="float32",
):
    """(state, batch) -> (state, metrics): one AdamW update on the mean cross-entropy.

    `collectives` (Topology.collectives) make it run unchanged under jit, where the batch is one
    global array, and under pmap, where each device sees its slice and gradients are averaged.
    The forward pass runs on parameters cast to `compute_dtype` (e.g. bfloat16); the float32
    parameters, their gradients and the optimizer state stay float32.
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_key = jax.random.fold_in(state.dropout_key, state.step)
        dropout_key = collectives.device_key(dropout_key)
        weights_B = jnp.ones(batch["label"].shape[:1], jnp.float32)

        def loss_fn(params):
            model = nnx.merge(graphdef, cast_floating(params, compute_dtype), state.rest)
            logits_BC = model(batch, deterministic=False, rngs=nnx.Rngs(dropout=dropout_key))
            sums = classification_metrics(logits_BC, batch["label"], weights_B)
            rest = nnx.state(model, nnx.Not(nnx.Param))
            return sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), (sums, rest)

        (_, (sums, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads, sums = collectives.mean(grads), collectives.sum(sums)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": sums["loss_sum"] / sums["count"],
            "accuracy": sums["correct"] / sums["count"],
            "grad_norm": optax.tree.norm(grads),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, rest=rest, opt_state=opt_state
        )
        return new_state, metrics

    return train_step


def make_eval_step(
    graphdef: nnx.GraphDef,
    collectives: parallel.Collectives = parallel.JIT,
    compute_dtype="float32",
):
    """(params, rest, batch) -> weighted metric sums over the global batch, dropout off."""

    def eval_step(params, rest, batch: dict) -> dict:
        model = nnx.merge(graphdef, cast_floating(params, compute_dtype), rest)
        logits_BC = model(batch, deterministic=True)
        sums = classification_metrics(logits_BC, batch["label"], batch["weight"])
        return collectives.sum(sums)

    return eval_step
