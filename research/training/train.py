"""Training and evaluation, top to bottom: the config checked once into typed parts, the loop's
helpers, then `Run` and `train_and_evaluate`, which wire task, model, stages and loop together.

A run has one or two stages (`Stage`), each with its own steps, optimizer and checkpoints: where
`config.pretrain` asks, the encoder is first pretrained on the task's own inputs
(research/training/pretrain.py), then the task is trained from it; else the task alone. The
optimizer lives in research/training/optim.py, the pure step functions in
research/training/steps.py.
"""

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from research import tasks
from research.errors import NonFiniteLossError, UserError, check_choice, check_positive
from research.models import (
    ModelConfig,
    TokenPredictor,
    build_model,
    check_head_fits_task,
    encoder_has_cls,
)
from research.tasks.common import SEGMENT_TEST_PREFIX
from research.tasks.pipeline import eval_batches, train_dataset
from research.training import checkpoint, parallel, pretrain, profiling
from research.training.locks import claim_workdir, workdir_in_use
from research.training.metrics import MetricWriter, peak_memory
from research.training.optim import OptimizerConfig, create_optimizer, describe_schedule
from research.training.paths import workdir_path
from research.training.steps import create_train_state, make_eval_step, make_train_step

TEST_PARAMS = ("last", "best_val")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
#: The metrics split of each stage's first-step record (compile and startup time).
STARTUP_SPLIT = {"train": "startup", "pretrain": "pretrain_startup"}


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
class RunConfig:
    """A run's config, checked once (`resolve`): the ConfigDict that config.json records (with
    the model's vocabulary and class count filled in), its task, and the typed model, optimizer
    and pretraining configs built from it."""

    config: ml_collections.ConfigDict
    task: tasks.Task
    model: ModelConfig
    optimizer: OptimizerConfig
    pretrain: pretrain.PretrainConfig


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
    """Checks every field of `config` (a UserError names the first bad one) and types it; `config`
    itself is left as it was."""
    validate_config(config)
    task = tasks.get_task(config.task).at_options(config.task_options)
    config = ml_collections.ConfigDict(config.to_dict())
    pretraining = pretrain.PretrainConfig.from_config(config)
    # the task's tokens, and a mask token where the masked objective needs one
    config.model.vocab_size = task.vocab_size + pretraining.extra_tokens()
    config.model.num_classes = task.num_classes
    optimizer = OptimizerConfig.from_config(config.optimizer)
    check_head_fits_task(config.model.head, config.task, per_position=task.per_position)
    model = ModelConfig.from_config(config.model, class_token_offset=task.class_token_offset)
    return RunConfig(
        config=config, task=task, model=model, optimizer=optimizer, pretrain=pretraining
    )


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


@dataclasses.dataclass
class Stage:
    """One stage of a run's training, with its own step counter, optimizer, order of the training
    data and checkpoints: `train` (the task) or `pretrain` (research/training/pretrain.py, whose
    batches hold only the inputs). Its training records are logged under its name."""

    name: str
    train_step: Callable
    initial_state: Any
    abstract_state: Any
    checkpoints: checkpoint.Checkpoints | None  # None: a pretraining read from config.init_from
    num_steps: int
    inputs_only: bool = False


@dataclasses.dataclass
class LoopEnd:
    """How `Run.loop` ended: its last state, the step a signal stopped it at (else None), the last
    validation scores and the steps per second of this session's timed steps."""

    state: Any
    preempted_at: int | None = None
    val: dict | None = None
    steps_per_second: float | None = None


class Run:
    """One training run's wiring: data, compiled steps, checkpoints and outputs in `workdir`."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.started = time.perf_counter()
        resolved = resolve(config)
        self.config = config = resolved.config
        self.task = resolved.task
        self.pretrain = resolved.pretrain
        self.topology = topology = parallel.Topology.from_config(config)
        self.workdir, self.directory = workdir, workdir_path(workdir)
        self.writer = None
        self.resources = contextlib.ExitStack()
        try:
            if topology.is_main_process:
                self.resources.enter_context(claim_workdir(self.directory))
            checkpoint.check_resumable(workdir, config)
            if self.pretrain.init_from:
                pretrain.check_init_from(config)
            self._build(resolved)
        except BaseException:
            self.resources.close()
            raise

    def _build(self, resolved: RunConfig) -> None:
        """Data, optimizers, compiled steps and checkpoint managers; writes nothing yet."""
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
        make_model = functools.partial(build_model, resolved.model)
        self.graphdef, initial = create_train_state(make_model, config.seed, optimizer)
        collectives = topology.collectives
        train_step = make_train_step(self.graphdef, optimizer, collectives, config.compute_dtype)
        self.eval_step = topology.compile_eval_step(
            make_eval_step(self.graphdef, collectives, config.compute_dtype)
        )
        self.abstract_state = topology.abstract_state(initial)
        self.initial_state = initial
        self.checkpoints = self.checkpoint_manager(self.directory / "checkpoints")
        self.stage = Stage(
            "train",
            topology.compile_train_step(train_step, initial),
            initial,
            self.abstract_state,
            self.checkpoints,
            config.num_train_steps,
        )
        self.pretraining = self.build_pretraining(resolved) if self.pretrain.enabled else None
        self.best = checkpoint.BestParams(self.directory / "best")
        self.resources.callback(self.best.close)

    def checkpoint_manager(self, directory) -> checkpoint.Checkpoints:
        manager = checkpoint.Checkpoints(directory, keep=self.config.checkpoints_to_keep)
        self.resources.callback(manager.close)
        return manager

    def build_pretraining(self, resolved: RunConfig) -> Stage:
        """The pretraining stage: the token-prediction model (its encoder the task model's), its
        optimizer and compiled step, and its checkpoints in <workdir>/pretrain/ (none under
        `config.init_from`, whose last checkpoint is read instead: `pretrained`)."""
        config, pretraining = self.config, self.pretrain
        model_config = pretraining.model_config(resolved.model)
        optimizer = create_optimizer(pretraining.optimizer, pretraining.steps)
        self.say("pretraining: " + describe_schedule(pretraining.optimizer, pretraining.steps))
        graphdef, initial = create_train_state(
            functools.partial(TokenPredictor, model_config),
            config.seed,
            optimizer,
            stream=pretrain.PRETRAIN_STREAM,
        )
        step = pretrain.make_pretrain_step(
            graphdef,
            optimizer,
            pretraining,
            sequence_fields=self.task.sequence_fields,
            has_cls=encoder_has_cls(model_config),
            mask_token=self.task.vocab_size,
            collectives=self.topology.collectives,
            compute_dtype=config.compute_dtype,
        )
        folder = self.directory / pretrain.PRETRAIN_FOLDER / "checkpoints"
        return Stage(
            "pretrain",
            self.topology.compile_train_step(step, initial),
            initial,
            self.topology.abstract_state(initial),
            None if pretraining.init_from else self.checkpoint_manager(folder),
            pretraining.steps,
            inputs_only=True,
        )

    def open_outputs(self) -> None:
        """config.json and the metric writers, once; only after a checkpoint (if any) was
        restored, so that a resume refused for any reason leaves the workdir as it was."""
        if self.topology.is_main_process and self.writer is None:
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

    def training_data(self, stage: Stage):
        """An iterator over `stage`'s training batches (inputs only for pretraining)."""
        return iter(
            train_dataset(
                self.sources["train"],
                batch_size=self.config.batch_size,
                seed=self.config.seed,
                inputs_only=stage.inputs_only,
                **self.data_options,
            )
        )

    def restore(self, stage: Stage, train_iter) -> tuple[Any, int] | None:
        """`stage`'s latest checkpoint (moving `train_iter` to its position) and its step, placed
        for the step; None when it has none."""
        restored = stage.checkpoints.restore_latest(stage.abstract_state, train_iter, self.say)
        if restored is None:
            return None
        host, step = restored
        self.say(f"{stage.name}: resumed from the checkpoint at step {step} in {self.workdir}")
        return self.topology.put_state(host), step

    def check_finite(self, step: int, history, state) -> None:
        """Raises NonFiniteLossError unless the recent losses and the parameters are all finite:
        a step whose loss was finite can still have produced NaN parameters."""
        checked_losses(history)
        if not bool(all_finite(state.params)):
            raise NonFiniteLossError(f"the parameters became non-finite by step {step}")

    @contextlib.contextmanager
    def kept_on_nan(self, stage: Stage):
        """Adds to a NonFiniteLossError what the workdir keeps: nothing newer is ever saved."""
        try:
            yield
        except NonFiniteLossError as error:
            stage.checkpoints.wait()
            latest = stage.checkpoints.latest_step()
            which = "" if stage.name == "train" else f"{stage.name} "
            kept = (
                f"the {which}checkpoint of step {latest} is kept"
                if latest is not None
                else f"no {which}checkpoint had been saved"
            )
            raise NonFiniteLossError(f"{which}{error}; {kept}") from None

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

    # ------------------------------------------------------------------------- the stages

    def train(self) -> dict:
        """Pretrains (where config.pretrain asks and the task has not started yet), then trains
        the task from where its checkpoints left off, and scores it (`finish`)."""
        train_iter = self.training_data(self.stage)
        restored = self.restore(self.stage, train_iter)
        if restored is None:
            initial = self.initial_state
            if self.pretraining is not None:
                pretrained = self.pretrained()
                if isinstance(pretrained, LoopEnd):  # stopped by a signal
                    return {"preempted": True, "step": pretrained.preempted_at, "stage": "pretrain"}
                initial = pretrain.with_encoder(initial, pretrained)
            restored = self.topology.put_state(initial), 0
        state, start_step = restored
        self.open_outputs()
        num_steps = self.config.num_train_steps
        if self.already_stopped_early(start_step):  # re-scored (--reevaluate): nothing to train
            num_steps = start_step
        end = self.loop(self.stage, state, start_step, train_iter, num_steps=num_steps)
        if end.preempted_at is not None:
            return {"preempted": True, "step": end.preempted_at}
        return self.finish(end.state, end.val, end.steps_per_second)

    def pretrained(self):
        """The pretrained model's state (params and rest, host layout) the task starts from: this
        workdir's pretraining, run or resumed here, or `config.init_from`'s finished one; a
        LoopEnd when a signal stopped the pretraining."""
        stage = self.pretraining
        if self.pretrain.init_from:
            return pretrain.finished_pretraining(self.config, stage.abstract_state)
        pretrain_iter = self.training_data(stage)
        restored = self.restore(stage, pretrain_iter)
        state, start_step = restored or (self.topology.put_state(stage.initial_state), 0)
        self.open_outputs()
        end = self.loop(stage, state, start_step, pretrain_iter, num_steps=stage.num_steps)
        if end.preempted_at is not None:
            return end
        state = self.topology.host_state(end.state)
        return {"params": state.params, "rest": state.rest}

    def loop(self, stage: Stage, state, start_step: int, train_iter, *, num_steps: int) -> LoopEnd:
        """Trains `stage` from `start_step` to `num_steps`: logs, evaluates (the task's stage only),
        checkpoints, and stops early or at a signal after saving a checkpoint."""
        config, topology = self.config, self.topology
        evaluates = stage.name == "train"
        history: list[tuple[int, dict]] = []
        clock = StepClock()
        val = None
        stop_early = False
        progress = tqdm(
            total=num_steps,
            initial=start_step,
            desc=stage.name,
            unit="step",
            file=sys.stderr,
            disable=not topology.is_main_process,
        )
        profiled = profiling.parse_steps(config.profile_steps, num_steps) if evaluates else None
        profiler = profiling.StepProfiler(profiled, self.directory / "profile", self.say)
        preemption = checkpoint.PreemptionHandler()
        with progress, preemption, profiler, self.kept_on_nan(stage):
            for step in range(start_step + 1, num_steps + 1):
                with profiler.step(step, state):
                    batch = topology.put_batch(next(train_iter))
                    state, metrics = stage.train_step(state, batch)
                profiler.end_step(step, (state, metrics))
                history.append((step, topology.unreplicate_metrics(metrics)))
                progress.update(1)
                clock.tick()
                if step == start_step + 1:
                    jax.block_until_ready(metrics)
                    seconds = time.perf_counter() - self.started
                    startup = {"time_to_first_step": seconds, "resumed_from_step": start_step}
                    self.log(step, STARTUP_SPLIT[stage.name], startup)
                    self.say(
                        f"{stage.name}: first step done {seconds:.1f}s after start "
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
                    self.log(step, stage.name, summary)
                    progress.set_postfix(
                        loss=f"{summary['loss']:.4f}",
                        acc=f"{summary['accuracy']:.3f}",
                        steps_per_s=f"{rate or 0:.1f}",
                    )
                    history = []
                    clock.restart()
                if evaluates and itstime(step, config.eval_every_steps, last):
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
                    stage.checkpoints.save(step, topology.host_state(state), train_iter)
                if stop_early and not preempted:
                    progress.close()
                    self.say(
                        f"validation accuracy {val['accuracy']:.4f} reached "
                        f"config.stop_at_validation_accuracy={reached} at step {step}: "
                        "training stops here"
                    )
                    break
                if preempted:
                    stage.checkpoints.wait()
                    progress.close()
                    self.say(
                        f"{stage.name}: stopped by signal at step {step}; checkpoint saved in "
                        f"{self.workdir}; run the same command again to resume"
                    )
                    return LoopEnd(state, preempted_at=step)
        stage.checkpoints.wait()
        return LoopEnd(state, val=val, steps_per_second=clock.rate())

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
        pretraining = pretrain.pretraining_record(config, self.workdir)
        if pretraining is not None:
            results["pretraining"] = pretraining
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
