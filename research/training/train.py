"""Training and evaluation, top to bottom: the config checked once into typed parts, the optimizer,
pure loss and step functions, the loop's helpers, then `Run` and `train_and_evaluate`, which wire
task, model and loop together.

The model is a Flax NNX module split once into (graphdef, params, rest); the step functions take and
return plain pytrees, so they are pure and jit-compiled.
"""

import contextlib
import dataclasses
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
from research.errors import NonFiniteLossError, UserError, check_choice, check_positive
from research.models import ModelConfig, build_model, check_head_fits_task
from research.tasks.common import SEGMENT_TEST_PREFIX
from research.tasks.pipeline import eval_batches, train_dataset
from research.training import checkpoint, parallel, profiling
from research.training.locks import claim_workdir, workdir_in_use
from research.training.metrics import MetricWriter, peak_memory
from research.training.paths import workdir_path

SCHEDULES = ("rsqrt", "cosine", "constant")
TEST_PARAMS = ("last", "best_val")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


# ----------------------------------------------------------------------------- configuration


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the training fields; raises UserError naming the first bad field."""
    for field in ("batch_size", "eval_batch_size", "num_train_steps"):
        check_positive(f"config.{field}", config[field])
    for field in ("log_every_steps", "eval_every_steps"):
        check_positive(f"config.{field}", config[field], allow_zero=True)
    check_choice("config.test_params", config.test_params, TEST_PARAMS)
    threshold = config.get("stop_at_validation_accuracy", 0.0)
    if isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
        raise UserError(
            f"config.stop_at_validation_accuracy={threshold!r} must lie in [0, 1] (0 = train "
            "every step)"
        )
    check_choice("config.compute_dtype", config.compute_dtype, COMPUTE_DTYPES)
    profiling.parse_steps(config.profile_steps, config.num_train_steps)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """`config.optimizer`, typed and checked (`from_config`); configs/base.py says what each
    field means."""

    schedule: str
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    b1: float
    b2: float
    eps: float
    grad_clip_norm: float

    @classmethod
    def from_config(cls, optimizer: ml_collections.ConfigDict) -> "OptimizerConfig":
        """Checks `optimizer` (= config.optimizer); a bad field is a one-line UserError."""
        check_choice("config.optimizer.schedule", optimizer.schedule, SCHEDULES)
        check_positive("config.optimizer.warmup_steps", optimizer.warmup_steps, allow_zero=True)
        if not optimizer.learning_rate > 0:
            raise UserError(
                f"config.optimizer.learning_rate={optimizer.learning_rate!r} must be > 0"
            )
        return cls(**{field.name: optimizer[field.name] for field in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's config, checked once (`resolve`): the ConfigDict that config.json records (with
    the task's vocabulary and class count filled in), its task, and the typed model and optimizer
    configs built from it."""

    config: ml_collections.ConfigDict
    task: tasks.Task
    model: ModelConfig
    optimizer: OptimizerConfig


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
    """Checks every field of `config` (a UserError names the first bad one) and types it; `config`
    itself is left as it was."""
    validate_config(config)
    task = tasks.get_task(config.task).at_options(config.task_options)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.vocab_size = task.vocab_size
    config.model.num_classes = task.num_classes
    optimizer = OptimizerConfig.from_config(config.optimizer)
    check_head_fits_task(config.model.head, config.task, per_position=task.per_position)
    model = ModelConfig.from_config(config.model, class_token_offset=task.class_token_offset)
    return RunConfig(config=config, task=task, model=model, optimizer=optimizer)


# ----------------------------------------------------------------------------- optimizer


def learning_rate_schedule(optimizer: OptimizerConfig, num_steps: int) -> optax.Schedule:
    """Step -> rate; every schedule peaks at `optimizer.learning_rate` (at the end of warmup), so
    one rate means the same thing under each and a learning-rate ablation compares like with like.

    rsqrt: peak * min(1, s/w) * sqrt(w / max(s, w)), LRA's c * min(1, s/w) / sqrt(max(s, w)) with
    c = peak * sqrt(w) (LRA's `rsqrt_normalized_decay`); cosine: linear warmup, then cosine to 0 at
    `num_steps`; constant: linear warmup, then flat.
    """
    rate, warmup = optimizer.learning_rate, optimizer.warmup_steps
    if optimizer.schedule == "rsqrt":
        warmup = max(warmup, 1)

        def rsqrt(step):
            step = jnp.asarray(step, jnp.float32)
            decay = jnp.sqrt(warmup / jnp.maximum(step, warmup))
            return rate * jnp.minimum(1.0, step / warmup) * decay

        return rsqrt
    if optimizer.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, rate, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1)
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, rate, max(warmup, 1)), optax.constant_schedule(rate)],
        [warmup],
    )


def describe_schedule(optimizer: OptimizerConfig, num_steps: int) -> str:
    """One line on the peak rate and warmup, and the last rate when the run ends in warmup."""
    line = f"peak learning rate {optimizer.learning_rate:.2e} ({optimizer.schedule} schedule, "
    line += f"warmup {optimizer.warmup_steps} steps)"
    if num_steps < optimizer.warmup_steps:  # as in LRA's Retrieval (5,000 steps, warmup 8,000)
        last = float(learning_rate_schedule(optimizer, num_steps)(num_steps))
        line += f"; this run ends in warmup at {last:.2e}"
    return line


def create_optimizer(optimizer: OptimizerConfig, num_steps: int):
    """AdamW (decoupled weight decay) on the schedule, with optional global-norm clipping."""
    adamw = optax.adamw(
        learning_rate_schedule(optimizer, num_steps),
        b1=optimizer.b1,
        b2=optimizer.b2,
        eps=optimizer.eps,
        weight_decay=optimizer.weight_decay,
    )
    if optimizer.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optimizer.grad_clip_norm), adamw)
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


def create_train_state(model_config: ModelConfig, seed: int, optimizer):
    """Initialises the model from `seed` (config.seed); returns its graphdef and the initial
    state.

    Model and optimizer state are built inside `jit`: run eagerly, each of the initialisers'
    few dozen small operations is compiled on its own, seconds of every run's startup on a CPU.
    """
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    model = nnx.jit(lambda key: build_model(model_config, rngs=nnx.Rngs(params=key)))(init_key)
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


# ----------------------------------------------------------------------------- the loop


def check_lengths(builder, config: ml_collections.ConfigDict) -> None:
    """Refuses, before compiling, a dataset whose longest input exceeds config.model.max_len."""
    longest = int(builder.info.metadata.get("max_length", 0))
    if longest > config.model.max_len and not config.truncate:
        raise UserError(
            f"task {config.task} has inputs of up to {longest} tokens but config.model.max_len="
            f"{config.model.max_len}; raise config.model.max_len or set config.truncate=True"
        )


def prepare_data(task: tasks.Task, config, topology: parallel.Topology):
    """Builds the dataset (process 0 first, so a shared disk is written once) and its sources."""
    if topology.is_main_process:
        builder = tasks.prepare_builder(task, config.task_options, config.data_dir)
    topology.barrier("data prepared")
    if not topology.is_main_process:
        builder = tasks.prepare_builder(task, config.task_options, config.data_dir)
    check_lengths(builder, config)
    return tasks.load_sources(builder)


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache: a restarted run skips most of its compile time."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


class StepClock:
    """Seconds spent in training steps only, so steps per second compare variants fairly.

    The first step (compilation) and evaluations are left out: the loop calls `stop` before them
    and `restart` after. `stop` waits for the last dispatched step, since JAX returns before the
    device has finished. Totals cover this session of the run (a resumed run starts at zero).
    """

    def __init__(self):
        self.steps, self.seconds = 0, 0.0
        self.log_steps, self.log_seconds = 0, 0.0
        self.restart()

    def restart(self) -> None:
        self._steps, self._start = 0, time.perf_counter()

    def tick(self) -> None:
        self._steps += 1

    def stop(self, outputs) -> None:
        jax.block_until_ready(outputs)
        seconds = time.perf_counter() - self._start
        self.steps, self.seconds = self.steps + self._steps, self.seconds + seconds
        self.log_steps, self.log_seconds = self.log_steps + self._steps, self.log_seconds + seconds
        self._steps = 0

    def take_log_rate(self) -> float | None:
        """Steps per second since the previous call (None if no timed step ran since)."""
        rate = self.log_steps / self.log_seconds if self.log_steps else None
        self.log_steps, self.log_seconds = 0, 0.0
        return rate

    def rate(self) -> float | None:
        """Steps per second over the whole session (None if no timed step ran)."""
        return self.steps / self.seconds if self.steps else None


def itstime(step: int, every: int, last: bool) -> bool:
    """The rule of every periodic action (logging, evaluation, checkpoints; big_vision's
    `itstime`): each `every` steps (0: never), and always at the last step."""
    return last or bool(every and step % every == 0)


@jax.jit
def all_finite(tree) -> jax.Array:
    """True when no floating-point leaf of `tree` holds a NaN or an infinity."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def checked_losses(history: list[tuple[int, dict]]) -> list[dict]:
    """The step metrics of `history` ((step, metrics) pairs) on the host; a non-finite loss raises
    NonFiniteLossError naming its step."""
    values = jax.device_get([metrics for _, metrics in history])
    for (step, _), metrics in zip(history, values, strict=True):
        if not np.isfinite(metrics["loss"]):
            raise NonFiniteLossError(
                f"the training loss became {float(metrics['loss'])} at step {step}"
            )
    return values


def summarize(history: list[tuple[int, dict]]) -> dict[str, float]:
    """Means of the step metrics (checked_losses: a non-finite loss raises)."""
    values = checked_losses(history)
    return {name: float(np.mean([m[name] for m in values])) for name in values[0]} if values else {}


class Run:
    """One training run's wiring: data, compiled steps, checkpoints and outputs in `workdir`."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.started = time.perf_counter()
        resolved = resolve(config)
        self.config = config = resolved.config
        self.task = resolved.task
        self.topology = topology = parallel.Topology.from_config(config)
        self.workdir, self.directory = workdir, workdir_path(workdir)
        self.writer = None
        self.resources = contextlib.ExitStack()
        try:
            if topology.is_main_process:
                self.resources.enter_context(claim_workdir(self.directory))
            checkpoint.check_resumable(workdir, config)
            self._build(resolved)
        except BaseException:
            self.resources.close()
            raise

    def _build(self, resolved: RunConfig) -> None:
        """Data, optimizer, compiled steps and checkpoint managers; writes nothing yet."""
        config, task, topology = self.config, self.task, self.topology
        self.sources = prepare_data(task, config, topology)
        self.data_options = dict(
            max_len=config.model.max_len,
            sequence_fields=task.sequence_fields,
            truncate=config.truncate,
            max_targets=task.max_targets,
            shard_index=topology.process_index,
            shard_count=topology.process_count,
        )
        enable_compilation_cache(config.compilation_cache_dir)

        optimizer = create_optimizer(resolved.optimizer, config.num_train_steps)
        self.say(describe_schedule(resolved.optimizer, config.num_train_steps))
        self.graphdef, initial = create_train_state(resolved.model, config.seed, optimizer)
        collectives = topology.collectives
        self.train_step = topology.compile_train_step(
            make_train_step(self.graphdef, optimizer, collectives, config.compute_dtype), initial
        )
        self.eval_step = topology.compile_eval_step(
            make_eval_step(self.graphdef, collectives, config.compute_dtype)
        )
        self.abstract_state = topology.abstract_state(initial)
        self.initial_state = initial
        self.checkpoints = checkpoint.Checkpoints(
            self.directory / "checkpoints", keep=config.checkpoints_to_keep
        )
        self.resources.callback(self.checkpoints.close)
        self.best = checkpoint.BestParams(self.directory / "best")
        self.resources.callback(self.best.close)

    def open_outputs(self) -> None:
        """config.json and the metric writers; only once the checkpoint (if any) was restored, so
        that a resume refused for any reason leaves the workdir as it was."""
        if self.topology.is_main_process:
            (self.directory / "config.json").write_text(self.config.to_json(indent=2))
            self.writer = MetricWriter(self.workdir)
            self.resources.callback(self.writer.close)

    # ------------------------------------------------------------------------- pieces

    def log(self, step: int, split: str, metrics: dict) -> None:
        if self.writer:
            self.writer.write(step, split, metrics)

    def say(self, message: str) -> None:
        if self.topology.is_main_process:
            tqdm.write(message, file=sys.stderr)

    def evaluate(self, split: str, state) -> dict[str, float]:
        """Mean loss and accuracy over every example of `split`."""
        batches = eval_batches(
            self.sources[split], batch_size=self.config.eval_batch_size, **self.data_options
        )
        totals = None
        for batch in batches:
            sums = self.eval_step(state.params, state.rest, self.topology.put_batch(batch))
            sums = self.topology.unreplicate_metrics(sums)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        totals = jax.device_get(totals)
        count = max(float(totals["count"]), 1.0)
        return {
            "loss": float(totals["loss_sum"]) / count,
            "accuracy": float(totals["correct"]) / count,
            "examples": float(totals["count"]),
        }

    def restore_or_init(self, train_iter):
        """The latest checkpoint's state (moving `train_iter` to its position), else a fresh one."""
        restored = self.checkpoints.restore_latest(self.abstract_state, train_iter, self.say)
        if restored is None:
            return self.topology.put_state(self.initial_state), 0
        host, step = restored
        self.say(f"resumed from the checkpoint at step {step} in {self.workdir}")
        return self.topology.put_state(host), step

    def check_finite(self, step: int, history, state) -> None:
        """Raises NonFiniteLossError unless the recent losses and the parameters are all finite:
        a step whose loss was finite can still have produced NaN parameters."""
        checked_losses(history)
        if not bool(all_finite(state.params)):
            raise NonFiniteLossError(f"the parameters became non-finite by step {step}")

    @contextlib.contextmanager
    def kept_on_nan(self):
        """Adds to a NonFiniteLossError what the workdir keeps: nothing newer is ever saved."""
        try:
            yield
        except NonFiniteLossError as error:
            self.checkpoints.wait()
            latest = self.checkpoints.latest_step()
            kept = (
                f"the checkpoint of step {latest} is kept"
                if latest is not None
                else "no checkpoint had been saved"
            )
            raise NonFiniteLossError(f"{error}; {kept}") from None

    def already_stopped_early(self, step: int) -> bool:
        """Whether this workdir's run stopped at `step` because validation reached
        `stop_at_validation_accuracy` (results.json's `stopped_early_at_step`), at a threshold
        the run still meets: then there is nothing left to train."""
        saved = self.directory / "results.json"
        threshold = self.config.stop_at_validation_accuracy
        if not (threshold and saved.exists()):
            return False
        results = json.loads(saved.read_text())
        return (
            results.get("stopped_early_at_step") == step
            and results["validation_accuracy"] >= threshold
        )

    def save(self, step: int, state, train_iter) -> None:
        self.checkpoints.save(step, self.topology.host_state(state), train_iter)

    # ------------------------------------------------------------------------- the loop

    def train(self) -> dict:
        config, topology = self.config, self.topology
        train_iter = iter(
            train_dataset(
                self.sources["train"],
                batch_size=config.batch_size,
                seed=config.seed,
                **self.data_options,
            )
        )
        state, start_step = self.restore_or_init(train_iter)
        self.open_outputs()
        num_steps = config.num_train_steps
        if self.already_stopped_early(start_step):  # re-scored (--reevaluate): nothing to train
            num_steps = start_step
        history: list[tuple[int, dict]] = []
        clock = StepClock()
        val = None
        stop_early = False
        progress = tqdm(
            total=num_steps,
            initial=start_step,
            desc="train",
            unit="step",
            file=sys.stderr,
            disable=not topology.is_main_process,
        )
        profiler = profiling.StepProfiler(
            profiling.parse_steps(config.profile_steps, num_steps),
            self.directory / "profile",
            self.say,
        )
        with progress, checkpoint.PreemptionHandler() as preemption, profiler, self.kept_on_nan():
            for step in range(start_step + 1, num_steps + 1):
                with profiler.step(step, state):
                    state, metrics = self.train_step(state, topology.put_batch(next(train_iter)))
                profiler.end_step(step, (state, metrics))
                history.append((step, topology.unreplicate_metrics(metrics)))
                progress.update(1)
                clock.tick()
                if step == start_step + 1:
                    jax.block_until_ready(metrics)
                    seconds = time.perf_counter() - self.started
                    self.log(
                        step,
                        "startup",
                        {"time_to_first_step": seconds, "resumed_from_step": start_step},
                    )
                    self.say(
                        f"first step done {seconds:.1f}s after start "
                        f"(resumed from step {start_step})"
                    )
                    clock.restart()  # the first step's time is compilation: not counted
                last = step == num_steps
                if itstime(step, config.log_every_steps, last):
                    clock.stop(metrics)
                    summary = summarize(history)
                    rate = clock.take_log_rate()
                    if rate is not None:
                        summary["steps_per_second"] = rate
                    summary["peak_memory_bytes"] = peak_memory()[0]
                    self.log(step, "train", summary)
                    progress.set_postfix(
                        loss=f"{summary['loss']:.4f}",
                        acc=f"{summary['accuracy']:.3f}",
                        steps_per_s=f"{rate or 0:.1f}",
                    )
                    history = []
                    clock.restart()
                if itstime(step, config.eval_every_steps, last):
                    clock.stop(metrics)
                    val = self.evaluate("validation", state)
                    self.log(step, "validation", val)
                    self.say(
                        f"step {step}: validation loss {val['loss']:.4f} "
                        f"accuracy {val['accuracy']:.4f}"
                    )
                    if config.test_params == "best_val":
                        self.best.offer(step, val["accuracy"], topology.host_state(state).params)
                    reached = config.stop_at_validation_accuracy
                    stop_early = bool(reached) and val["accuracy"] >= reached and not last
                    clock.restart()
                preempted = preemption.should_stop(step)
                if preempted or stop_early or itstime(step, config.checkpoint_every_steps, last):
                    self.check_finite(step, history, state)
                    self.save(step, state, train_iter)
                if stop_early and not preempted:
                    progress.close()
                    self.say(
                        f"validation accuracy {val['accuracy']:.4f} reached "
                        f"config.stop_at_validation_accuracy={reached} at step {step}: "
                        "training stops here"
                    )
                    break
                if preempted:
                    self.checkpoints.wait()
                    progress.close()
                    self.say(
                        f"stopped by signal at step {step}; checkpoint saved in "
                        f"{self.workdir}; run the same command again to resume"
                    )
                    return {"preempted": True, "step": step}
        self.checkpoints.wait()
        return self.finish(state, val, clock.rate())

    def finish(self, state, val, steps_per_second: float | None) -> dict:
        """Scores the chosen parameters on the test split and writes results.json.

        The file also holds this session's speed (`steps_per_second`, StepClock.rate) and peak
        memory; the returned results leave those out, so that two runs which trained alike return
        equal results however fast they ran.
        """
        config = self.config
        step = int(jax.device_get(self.topology.host_state(state).step))
        if val is None:  # nothing left to train: the workdir held a finished run
            val = self.evaluate("validation", state)
        if config.test_params == "best_val" and self.best.step is not None:
            params = self.best.restore(self.abstract_state.params)
            state = state.replace(params=self.topology.put_state(params))
            params_step = self.best.step
        else:
            params_step = step
        # "test", then each segment's own test split where the dataset has them (MQAR's mix)
        splits = [s for s in self.sources if s == "test" or s.startswith(SEGMENT_TEST_PREFIX)]
        scores = {split: self.evaluate(split, state) for split in splits}
        for split, metrics in scores.items():
            self.log(step, split, metrics)
        test = scores.pop("test")
        results = {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "test_examples": test["examples"],
            "validation_accuracy": val["accuracy"],
            "best_validation_accuracy": self.best.accuracy,
            "best_validation_step": self.best.step,
            "test_params": config.test_params,
            "test_params_step": params_step,
            "num_train_steps": config.num_train_steps,
            # The step training stopped at, when validation reached stop_at_validation_accuracy.
            "stopped_early_at_step": step if step < config.num_train_steps else None,
            "num_params": sum(x.size for x in jax.tree.leaves(self.initial_state.params)),
        }
        if scores:
            results["test_accuracy_by_split"] = {k: v["accuracy"] for k, v in scores.items()}
        if self.topology.is_main_process:
            measured = dict(zip(MEASURED, (steps_per_second, *peak_memory()), strict=True))
            saved = self.directory / "results.json"
            if steps_per_second is None and saved.exists():  # re-scored: nothing was trained now
                measured = {key: json.loads(saved.read_text()).get(key) for key in MEASURED}
            saved.write_text(json.dumps(results | measured, indent=2))
            # Per-position tasks score targets (e.g. MQAR's queries), several per example.
            scored = "targets" if self.task.per_position else "examples"
            print(
                f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}, "
                f"{int(test['examples'])} {scored}, {config.test_params} parameters from step "
                f"{params_step}); results in {self.directory / 'results.json'}"
            )
        return results

    def close(self) -> None:
        self.resources.close()


MEASURED = ("steps_per_second", "peak_memory_bytes", "peak_memory_source")


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """The results of the finished run of exactly `config` that `workdir` holds, else None.

    Finished: results.json is there, config.json equals the resolved `config` (a field added
    since, `checkpoint.ADDED_FIELDS`, counts at the value the run behaved as) and the run
    trained `config.num_train_steps`. Such a workdir is left as it is: running it again changes
    nothing (its results, speed and metrics stay those of the run that made them).
    """
    directory = workdir_path(workdir)
    saved_config, saved_results = directory / "config.json", directory / "results.json"
    if not (saved_config.exists() and saved_results.exists()):
        return None
    resolved = resolve(config).config
    if workdir_in_use(directory):  # a run (say a --reevaluate) holds it: Run refuses in one line
        return None
    saved = json.loads(saved_config.read_text())
    if checkpoint.config_differences(saved, json.loads(resolved.to_json()), structural_only=False):
        return None
    results = json.loads(saved_results.read_text())
    if results.get("num_train_steps") != resolved.num_train_steps:
        return None
    if jax.process_index() == 0:
        print(
            f"{workdir} holds the finished run of this config: test accuracy "
            f"{results['test_accuracy']:.4f} (loss {results['test_loss']:.4f}, "
            f"{results['test_params']} parameters from step {results['test_params_step']}); "
            f"results in {saved_results}; nothing was changed (--reevaluate scores it again)"
        )
    return {key: value for key, value in results.items() if key not in MEASURED}


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, reevaluate: bool = False
) -> dict:
    """Trains `config` in `workdir`, resuming its latest checkpoint if there is one.

    Writes config.json, metrics.jsonl, tensorboard/, checkpoints/ and results.json, and returns
    the results (test accuracy and loss, validation scores, which parameters were tested), or
    {"preempted": True, "step": ...} when a signal stopped it after saving a checkpoint. A workdir
    that holds the finished run of this very config is not touched (`finished_results`) unless
    `reevaluate`, which scores its parameters again (and keeps the speed its training measured).
    """
    if not reevaluate:
        finished = finished_results(config, workdir)
        if finished is not None:
            return finished
    run = Run(config, workdir)
    try:
        return run.train()
    finally:
        run.close()
