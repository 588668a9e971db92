"""Checkpoints (orbax) and resuming: what is saved, when a workdir may be resumed, and preemption.

A checkpoint holds the whole `TrainState` (step, parameters, optimizer state, the model's other
state, the dropout base key) and the grain iterator state of every process, so a resumed run
continues bit for bit. Orbax writes each checkpoint to a temporary folder and renames it when
complete: a process killed mid-save leaves the previous checkpoint intact, and the partial folder
is removed on the next start. A checkpoint that cannot be read (a damaged file, an interrupted copy
between machines) is moved aside to `<workdir>/checkpoints_unreadable/`, never deleted, and the run
resumes from the newest one that reads; a save that finds the disk full stops the run in one line,
keeping the previous checkpoint.
"""

import contextlib
import dataclasses
import errno
import json
import signal
from collections.abc import Callable, Iterator

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from research.errors import UserError, describe
from research.flat import flatten
from research.training.paths import workdir_path

# Fields that define what a checkpoint is; resuming with any of these changed is refused.
STRUCTURAL_PREFIXES = ("task", "task_options.", "model.", "batch_size", "init_from")
STRUCTURAL_PREFIXES += ("pretrain.steps", "pretrain.objective", "pretrain.mask_rate")
NON_STRUCTURAL = ("model.dropout_rate", "model.attention_dropout_rate")
# Fields added after runs were saved without them, with the value those runs behaved as: a saved
# config that lacks one matches a new config holding that value, so old workdirs still resume.
ADDED_FIELDS = {
    "model.mask_zero_tokens": False,
    "model.two_tower_head": "interaction",
    "model.mlp": True,
    "model.init": "nnx",
    "model.padding_mask": "keys",
    "model.cls_mask": "real",
    "model.tie_output": False,
    "stop_at_validation_accuracy": 0.0,
    "pretrain.steps": 0,
    "init_from": "",
    "task_options.mix": [],  # MQAR's training mix, as JSON holds it
}


def retired(name: str) -> bool:
    """Arrays older checkpoints hold that the model no longer makes, and that a resume skips: the
    fixed sinusoidal table, which was model state before it became a constant of the step."""
    return name.startswith("rest.") and name.endswith("embedding.positions")


def config_differences(saved: dict, new: dict, *, structural_only: bool = True) -> list[str]:
    """`field: old -> new` for every structural field (every field, without `structural_only`)
    that differs; a field of ADDED_FIELDS that `saved` lacks counts at the value its run behaved
    as, and the settings of a pretraining that neither run has (`pretrain.steps` 0) are not
    compared."""
    old_flat, new_flat = flatten(saved), flatten(new)
    no_pretraining = not old_flat.get("pretrain.steps") and not new_flat.get("pretrain.steps")
    differences = []
    for field in sorted(set(old_flat) | set(new_flat)):
        structural = field.startswith(STRUCTURAL_PREFIXES) and field not in NON_STRUCTURAL
        if structural_only and not structural:
            continue
        if no_pretraining and field.startswith("pretrain.") and field != "pretrain.steps":
            continue
        old = old_flat.get(field, ADDED_FIELDS.get(field, "<absent>"))
        value = new_flat.get(field, "<absent>")
        if old != value:
            differences.append(f"{field}: {old!r} -> {value!r}")
    return differences


def check_resumable(workdir: str, config) -> None:
    """Refuses to resume a workdir whose checkpoints were made with a different model or task."""
    directory = workdir_path(workdir)
    saved_path = directory / "config.json"
    if config.allow_config_change or not saved_path.exists():
        return
    if not (directory / "checkpoints").is_dir():
        return
    saved = json.loads(saved_path.read_text())
    differences = config_differences(saved, json.loads(config.to_json()))
    if differences:
        raise UserError(
            f"--workdir {workdir} holds checkpoints of a different run ({'; '.join(differences)});"
            " use a new --workdir, or set --config.allow_config_change=True to resume anyway"
        )


def _shapes(tree) -> dict[str, tuple]:
    """'params.encoder.blocks.0.attention.key.kernel' -> shape, for every array of a state tree
    (a TrainState, or orbax's metadata of a saved one: both name their leaves alike)."""
    shapes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        shapes[".".join(names).removesuffix(".value")] = tuple(leaf.shape)
    return shapes


def shape_mismatch(saved_metadata, abstract_state) -> str | None:
    """The first array whose saved shape differs from what the config builds (parameters
    before optimizer state), as one phrase; None when every array matches. Retired arrays in the
    checkpoint are ignored: the restore skips them."""
    saved = {name: shape for name, shape in _shapes(saved_metadata).items() if not retired(name)}
    new = _shapes(abstract_state)
    for name in sorted(set(saved) | set(new), key=lambda n: (not n.startswith("params."), n)):
        if name not in saved:
            return f"this config makes {name} {new[name]}, which the checkpoint lacks"
        if name not in new:
            return f"the checkpoint holds {name} {saved[name]}, which this config does not make"
        if saved[name] != new[name]:
            return f"{name} is {saved[name]} in the checkpoint but {new[name]} in this config"
    return None


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state, **items):
    """Item "state" of checkpoint `step`, laid out as `abstract_state` (a TrainState, or a dict of
    some of its fields), with the other `items` (name -> restore args) restored alongside.

    Only `abstract_state`'s arrays are read: the retired ones a checkpoint may also hold are
    skipped (`shape_mismatch` has refused any other difference). A field without arrays (the
    `rest` of a model without non-parameter state) is asked for as None and put back, since orbax
    cannot trim a saved subtree of retired arrays down to an empty one.
    """
    is_dict = isinstance(abstract_state, dict)
    fields = (
        abstract_state
        if is_dict
        else {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)}
    )
    empty = {name: tree for name, tree in fields.items() if not jax.tree.leaves(tree)}
    target = {**fields, **dict.fromkeys(empty)}
    state = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    restored = {
        **manager.restore(step, args=ocp.args.Composite(state=state, **items)).state,
        **empty,
    }
    return restored if is_dict else type(abstract_state)(**restored)


def disk_full(error: BaseException) -> bool:
    """Whether `error` or anything it was raised from is a full disk (ENOSPC), as an OSError or as
    the text TensorStore and orbax's background threads wrap it in."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class Checkpoints:
    """An orbax CheckpointManager for (TrainState, grain iterator) pairs."""

    def __init__(self, directory: epath.Path, *, keep: int, use_async: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=use_async,
        )
        self.manager = ocp.CheckpointManager(
            directory,
            options=options,
            item_handlers={
                # The format StandardCheckpointHandler writes, with partial restore (`retired`).
                "state": ocp.PyTreeCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    @contextlib.contextmanager
    def _saving(self, step: int | None) -> Iterator[None]:
        """Turns a full disk, met by a save or by the background thread finishing one, into a
        UserError naming the checkpoint that is kept; other failures keep their traceback."""
        try:
            yield
        except Exception as error:
            if not disk_full(error):
                raise
            kept = [s for s in self.manager.all_steps() if s != step]
            keeps = f"the checkpoint of step {max(kept)} is kept" if kept else "none was saved yet"
            which = f"of step {step} " if step is not None else ""
            raise UserError(
                f"saving the checkpoint {which}in {self.manager.directory} failed: no space left "
                f"on device; {keeps}; free some space and run the same command again to resume"
            ) from None

    def save(self, step: int, state, data_iterator) -> None:
        """Starts saving (asynchronously); `state` in host layout (Topology.host_state)."""
        with self._saving(step):
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeSave(state),
                    data=grain.checkpoint.CheckpointSave(data_iterator),
                ),
                force=True,
            )

    def restore(self, step: int, abstract_state, data_iterator):
        """Returns the saved state laid out as `abstract_state`; moves the iterator in place.

        A checkpoint whose arrays do not fit `abstract_state` (a resume that changed the model's
        shape) is refused with a UserError naming the first such array, before anything is read.
        """
        mismatch = shape_mismatch(self.manager.item_metadata(step)["state"], abstract_state)
        if mismatch:
            raise UserError(
                f"the checkpoint at step {step} in {self.manager.directory} does not fit this "
                f"config: {mismatch}; resume with the config it was saved with, or use a new "
                "--workdir"
            )
        data = grain.checkpoint.CheckpointRestore(data_iterator)
        return restore_state(self.manager, step, abstract_state, data=data)

    def restore_latest(
        self, abstract_state, data_iterator, say: Callable[[str], None]
    ) -> tuple[object, int] | None:
        """(state, step) of the newest checkpoint that reads, or None when there is none.

        A checkpoint that fails to read is moved aside (`set_aside`) with a line through `say`,
        and the next older one is tried; a UserError (a checkpoint of another shape) is not a
        damaged file and stops at once. If every checkpoint fails, one UserError says so.
        """
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self.restore(step, abstract_state, data_iterator), step
            except UserError:
                raise
            except Exception as error:
                moved, why = self.set_aside(step), describe(error, limit=240)
                failures.append(f"step {step}: {why}")
                say(
                    f"the checkpoint at step {step} cannot be read ({why}); moved it "
                    f"to {moved} and trying the one before it"
                )
        if failures:
            raise UserError(
                f"no checkpoint in {self.manager.directory} could be read ({'; '.join(failures)});"
                f" they are in {self.unreadable_folder()}; use a new --workdir, or move them back"
            )
        return None

    def unreadable_folder(self) -> epath.Path:
        return self.manager.directory.parent / "checkpoints_unreadable"

    def set_aside(self, step: int) -> epath.Path:
        """Moves checkpoint `step` out of the manager's folder (never deleting it) and returns
        where it went; a name already taken there gets a suffix."""
        folder = self.unreadable_folder()
        folder.mkdir(parents=True, exist_ok=True)
        target, n = folder / str(step), 1
        while target.exists():
            target, n = folder / f"{step}.{n}", n + 1
        (self.manager.directory / str(step)).rename(target)
        self.manager.reload()
        return target

    def wait(self) -> None:
        with self._saving(None):
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


class BestParams:
    """The best-validation parameters so far, in their own orbax folder so they survive a resume.

    Orbax tracks the best itself (`best_fn`): a step's accuracy is saved inside that step's
    checkpoint, so a run killed at any moment never names a step whose parameters are gone.
    `step` and `accuracy` are None until something was offered.
    """

    def __init__(self, directory: epath.Path):
        self.directory = directory
        self.step, self.accuracy = None, None
        self._manager = None
        if (directory / "params").is_dir():
            self.step = self.manager.best_step()
        if self.step is not None:
            self.accuracy = self.manager.metrics(self.step)["accuracy"]
        elif (directory / "score.json").exists():  # saved before orbax tracked the best here
            saved = json.loads((directory / "score.json").read_text())
            self.step, self.accuracy = saved["step"], saved["accuracy"]

    @property
    def manager(self) -> ocp.CheckpointManager:
        """Made on first use, so a run that never offers anything writes no folder."""
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics["accuracy"],
                best_mode="max",
                keep_checkpoints_without_metrics=False,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=False,
            )
            self._manager = ocp.CheckpointManager(self.directory / "params", options=options)
        return self._manager

    def offer(self, step: int, accuracy: float, params) -> None:
        """Keeps `params` if `accuracy` beats the best so far."""
        if self.accuracy is not None and accuracy <= self.accuracy:
            return
        metrics = {"accuracy": accuracy}
        self.manager.save(step, args=ocp.args.StandardSave(params), metrics=metrics, force=True)
        self.step, self.accuracy = step, accuracy

    def restore(self, abstract_params):
        return self.manager.restore(self.step, args=ocp.args.StandardRestore(abstract_params))

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


class PreemptionHandler:
    """Turns SIGTERM, SIGINT and SIGHUP (a closed terminal or ssh session) into a request to
    checkpoint and stop at a step boundary; `should_stop(step)` says when.

    One process: a signal handler sets a flag, and a second SIGINT falls through to Python's
    default (KeyboardInterrupt), so a user can still abort at once. Several processes (a pod): JAX's
    preemption sync point, which spreads one process's SIGTERM to all through the coordination
    service and picks a step they all stop at, without a collective on every step; SIGINT and
    SIGHUP are re-raised as SIGTERM so that they reach it too.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self.received: int | None = None
        self.multi_process = jax.process_count() > 1
        self._previous = {}

    def __enter__(self) -> "PreemptionHandler":
        for sig in self.SIGNALS:
            if sig == signal.SIGTERM and self.multi_process:
                continue  # JAX's preemption notifier handles SIGTERM
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.multi_process:
            signal.raise_signal(signal.SIGTERM)
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def should_stop(self, step: int) -> bool:
        """True at the step where every process should save and stop (called at every step)."""
        if self.multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.received is not None

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def restore_model_state(directory: epath.Path, abstract_state: dict) -> tuple[dict, int] | None:
    """The latest checkpoint's `TrainState` fields named in `abstract_state` (e.g. {"params": ...,
    "rest": ...}, laid out as its ShapeDtypeStructs) and its step, or None when `directory` holds
    no checkpoint. Only those fields are read, not the optimizer state or the data iterator, so
    tools that inspect a trained model (research/sweeps/attention_maps.py) need no optimizer or
    dataset.
    """
    if not directory.is_dir():
        return None
    manager = ocp.CheckpointManager(
        directory,
        item_handlers={"state": ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(create=False),
    )
    try:
        step = manager.latest_step()
        if step is None:
            return None
        return restore_state(manager, step, abstract_state), step
    finally:
        manager.close()
