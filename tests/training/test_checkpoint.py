"""Checkpoints and resuming, in process: a stopped-and-resumed run equals an uninterrupted one bit
for bit, a conflicting config is refused, and a non-finite loss keeps the last good checkpoint."""

import importlib
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from flax import nnx

from research.errors import NonFiniteLossError, UserError
from research.models.encoder import Embedding, sinusoidal_positions
from research.training import checkpoint, train
from research.training.metrics import read_metrics
from tests.training.workdir_testing import digest


def checkpoint_steps(workdir) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def saved_state(workdir, step: int | None = None) -> dict:
    """The TrainState saved at `step` (default: the latest) as a tree of numpy arrays."""
    step = step if step is not None else checkpoint_steps(workdir)[-1]
    path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata.tree,
    )
    return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def stop_with_sigterm_at(monkeypatch, stop_step: int, stop_split: str = "train") -> None:
    """Sends this process a real SIGTERM when the run logs `stop_step` under `stop_split` (the
    task's training records, or "pretrain" for the pretraining stage's)."""
    original = train.Run.log

    def log(self, step, split, metrics):
        original(self, step, split, metrics)
        if step == stop_step and split == stop_split:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train.Run, "log", log)


def test_stopped_and_resumed_run_equals_uninterrupted_run_bit_for_bit(
    resumable, tmp_path, monkeypatch
):
    straight = train.train_and_evaluate(resumable, str(tmp_path / "straight"))
    with monkeypatch.context() as patch:
        stop_with_sigterm_at(patch, 6)
        stopped = train.train_and_evaluate(resumable, str(tmp_path / "resumed"))
    assert stopped == {"preempted": True, "step": 6}
    assert checkpoint_steps(tmp_path / "resumed") == [4, 6]
    resumed = train.train_and_evaluate(resumable, str(tmp_path / "resumed"))

    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(tmp_path / "resumed"))
    assert resumed == straight
    losses = {
        name: [
            (r["step"], r["loss"])
            for r in read_metrics(str(tmp_path / name))
            if r["split"] == "train" and r["step"] > 6
        ]
        for name in ("straight", "resumed")
    }
    assert losses["resumed"] == losses["straight"]
    startup = [r for r in read_metrics(str(tmp_path / "resumed")) if r["split"] == "startup"]
    assert [r["resumed_from_step"] for r in startup] == [0, 6]
    assert all(r["time_to_first_step"] > 0 for r in startup)


def test_a_checkpoint_that_holds_the_sinusoidal_table_still_resumes_bit_for_bit(
    resumable, tmp_path, monkeypatch
):
    """Checkpoints written before the fixed sinusoidal table became a constant of the step hold it
    as model state (rest...embedding.positions): resuming one skips it and ends where an
    uninterrupted run does."""
    straight = train.train_and_evaluate(resumable, str(tmp_path / "straight"))
    make_embedding = Embedding.__init__

    def make_embedding_as_before(self, **options):
        make_embedding(self, **options)
        if self.positional == "sinusoidal":
            table = sinusoidal_positions(self.length, options["features"])
            self.positions = nnx.data(nnx.Variable(jnp.asarray(table)))

    with monkeypatch.context() as patch:
        patch.setattr(Embedding, "__init__", make_embedding_as_before)
        stop_with_sigterm_at(patch, 6)
        train.train_and_evaluate(resumable, str(tmp_path / "old"))
    assert saved_state(tmp_path / "old", 6)["rest"]["encoder"]["embedding"]["positions"]
    resumed = train.train_and_evaluate(resumable, str(tmp_path / "old"))

    assert resumed == straight
    assert saved_state(tmp_path / "old")["rest"] == {}
    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(tmp_path / "old"))


def test_retired_arrays_are_the_only_extra_arrays_a_resume_accepts():
    new = {"params": {"w": np.zeros(3)}, "rest": {}}
    table = {"rest": {"encoder": {"embedding": {"positions": {"value": np.zeros((5, 4))}}}}}
    assert checkpoint.shape_mismatch({**new, **table}, new) is None
    other = {"rest": {"encoder": {"features": {"value": np.zeros((5, 4))}}}}
    assert checkpoint.shape_mismatch({**new, **other}, new) == (
        "the checkpoint holds rest.encoder.features (5, 4), which this config does not make"
    )


def test_keeps_the_last_n_checkpoints(resumable, tmp_path):
    resumable.checkpoints_to_keep = 2
    train.train_and_evaluate(resumable, str(tmp_path))
    assert checkpoint_steps(tmp_path) == [8, 12]


def test_a_finished_run_started_again_changes_nothing(resumable, tmp_path, capsys):
    first = train.train_and_evaluate(resumable, str(tmp_path))
    before = digest(tmp_path)
    capsys.readouterr()
    again = train.train_and_evaluate(resumable, str(tmp_path))
    assert again == first
    assert digest(tmp_path) == before
    assert "holds the finished run of this config" in capsys.readouterr().out
    assert checkpoint_steps(tmp_path)[-1] == 12


def test_a_run_finished_before_a_field_existed_is_still_finished(resumable, tmp_path, capsys):
    """config.json written before model.tie_output and model.mlp existed (ADDED_FIELDS): the
    train command recognises the finished run and changes nothing."""
    train.train_and_evaluate(resumable, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    for field in ("tie_output", "mlp"):
        del saved["model"][field]
    (tmp_path / "config.json").write_text(json.dumps(saved, indent=2))
    before = digest(tmp_path)
    capsys.readouterr()
    train.train_and_evaluate(resumable, str(tmp_path))
    assert digest(tmp_path) == before
    assert "holds the finished run of this config" in capsys.readouterr().out


def test_a_run_stops_where_validation_reaches_the_threshold_and_stays_stopped(
    resumable, tmp_path, capsys
):
    """stop_at_validation_accuracy (Zoology's early stopping): the first evaluation at or above
    it (step 6 of 12 here, at a threshold any accuracy meets) saves a checkpoint, stops training
    and scores the test split; running it again changes nothing, and --reevaluate re-scores it
    without training the steps it skipped."""
    resumable.stop_at_validation_accuracy = 1e-9
    first = train.train_and_evaluate(resumable, str(tmp_path))
    assert checkpoint_steps(tmp_path)[-1] == 6
    assert first["stopped_early_at_step"] == 6 and first["num_train_steps"] == 12
    assert "reached config.stop_at_validation_accuracy=1e-09 at step 6" in capsys.readouterr().err
    rows = read_metrics(str(tmp_path))
    assert max(row["step"] for row in rows if row["split"] == "train") == 6
    assert [row["step"] for row in rows if row["split"] == "test"] == [6]
    before = digest(tmp_path)
    assert train.train_and_evaluate(resumable, str(tmp_path)) == first
    assert digest(tmp_path) == before
    again = train.train_and_evaluate(resumable, str(tmp_path), reevaluate=True)
    assert again == first
    assert checkpoint_steps(tmp_path)[-1] == 6
    rows = read_metrics(str(tmp_path))
    assert max(row["step"] for row in rows if row["split"] == "train") == 6


def test_reevaluating_a_finished_run_keeps_the_speed_its_training_measured(resumable, tmp_path):
    first = train.train_and_evaluate(resumable, str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps_per_second"] > 0
    again = train.train_and_evaluate(resumable, str(tmp_path), reevaluate=True)
    assert again == first
    rescored = json.loads((tmp_path / "results.json").read_text())
    assert rescored == saved
    tests = [row for row in read_metrics(str(tmp_path)) if row["split"] == "test"]
    assert len(tests) == 2  # the re-evaluation is logged as a second test row


def test_a_finished_run_with_more_steps_asked_for_trains_on(resumable, tmp_path):
    train.train_and_evaluate(resumable, str(tmp_path))
    resumable.num_train_steps = 16
    train.train_and_evaluate(resumable, str(tmp_path))
    assert checkpoint_steps(tmp_path)[-1] == 16


def test_conflicting_config_is_refused_unless_allowed(resumable, tmp_path):
    train.train_and_evaluate(resumable, str(tmp_path))
    resumable.model.num_layers = 3
    resumable.task_options.num_test = 32
    expected = r"model.num_layers: 2 -> 3; task_options.num_test: 64 -> 32"
    with pytest.raises(UserError, match=expected):
        train.train_and_evaluate(resumable, str(tmp_path))
    resumable.model.num_layers = 2
    resumable.allow_config_change = True
    resumable.num_train_steps = 14
    results = train.train_and_evaluate(resumable, str(tmp_path))
    assert results["test_examples"] == 32 and checkpoint_steps(tmp_path)[-1] == 14


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(resumable, tmp_path):
    train.train_and_evaluate(resumable, str(tmp_path))
    good = saved_state(tmp_path, 12)
    resumable.num_train_steps = 20
    resumable.optimizer.learning_rate = float("inf")
    with pytest.raises(
        NonFiniteLossError, match="became nan at step 14; the checkpoint of step 12 is kept$"
    ):
        train.train_and_evaluate(resumable, str(tmp_path))
    assert checkpoint_steps(tmp_path)[-1] == 12
    assert_trees_equal(saved_state(tmp_path, 12), good)


def test_parameters_that_became_nan_under_a_finite_loss_are_never_saved(resumable, tmp_path):
    """An infinite learning rate turns step 1's update into NaN parameters while step 1's loss
    (computed before the update) is finite: the save at step 1 must check the parameters."""
    resumable.optimizer.learning_rate = float("inf")
    resumable.log_every_steps = resumable.checkpoint_every_steps = 1
    expected = "parameters became non-finite by step 1; no checkpoint had been saved$"
    with pytest.raises(NonFiniteLossError, match=expected):
        train.train_and_evaluate(resumable, str(tmp_path))
    assert checkpoint_steps(tmp_path) == []


def test_all_finite():
    assert bool(train.all_finite({"a": np.ones(3), "b": [np.zeros((2, 2))]}))
    assert not bool(train.all_finite({"a": np.ones(3), "b": [np.array([1.0, np.inf])]}))
    assert not bool(train.all_finite({"a": np.array([np.nan])}))


def test_best_parameters_are_tracked_by_orbax_with_their_score_inside_the_checkpoint(tmp_path):
    best = checkpoint.BestParams(epath.Path(tmp_path / "best"))
    assert (best.step, best.accuracy) == (None, None)
    assert not (tmp_path / "best").exists()  # nothing offered, nothing written
    for step, accuracy in [(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.7)]:
        best.offer(step, accuracy, {"w": np.full(2, step, np.float32)})
    best.close()
    assert sorted(os.listdir(tmp_path / "best" / "params")) == ["3"]
    assert not (tmp_path / "best" / "score.json").exists()
    again = checkpoint.BestParams(epath.Path(tmp_path / "best"))
    assert (again.step, again.accuracy) == (3, 0.7)
    abstract = {"w": jax.ShapeDtypeStruct((2,), np.float32)}
    np.testing.assert_array_equal(again.restore(abstract)["w"], [3, 3])
    again.close()


def test_best_parameters_saved_before_orbax_tracked_them_are_still_read(tmp_path):
    """Workdirs written before: best/params/<step> without a score, and best/score.json."""
    legacy = ocp.CheckpointManager(epath.Path(tmp_path / "best" / "params"))
    legacy.save(5, args=ocp.args.StandardSave({"w": np.full(2, 5.0, np.float32)}))
    legacy.wait_until_finished()
    (tmp_path / "best" / "score.json").write_text('{"step": 5, "accuracy": 0.9}')
    best = checkpoint.BestParams(epath.Path(tmp_path / "best"))
    assert (best.step, best.accuracy) == (5, 0.9)
    abstract = {"w": jax.ShapeDtypeStruct((2,), np.float32)}
    np.testing.assert_array_equal(best.restore(abstract)["w"], [5, 5])
    best.offer(6, 0.8, {"w": np.zeros(2, np.float32)})  # worse: not kept
    assert best.step == 5
    best.close()


def test_fields_added_later_match_their_old_behaviour():
    saved = {"model": {"num_layers": 2}}
    added = {"mask_zero_tokens": False, "two_tower_head": "interaction"}
    assert checkpoint.config_differences(saved, {"model": {"num_layers": 2, **added}}) == []
    changed = {"model": {"num_layers": 2, "mask_zero_tokens": True, "two_tower_head": "lra"}}
    assert checkpoint.config_differences(saved, changed) == [
        "model.mask_zero_tokens: False -> True",
        "model.two_tower_head: 'interaction' -> 'lra'",
    ]


@pytest.mark.parametrize("spec", ["listops:size=tiny", "recall:size=tiny", "distance:"])
def test_a_workdir_saved_before_every_added_field_resumes_at_the_defaults(spec):
    """A saved config without any of ADDED_FIELDS (an older workdir) matches today's default
    config: every added field's default is the behaviour before it existed."""
    name, arg = spec.split(":")
    new = json.loads(importlib.import_module(f"configs.{name}").get_config(arg or None).to_json())
    if name == "listops":  # LRA's configs now build LRA's model; older runs built nnx's
        new["model"].update(init="nnx", padding_mask="keys", cls_mask="real")
    saved = json.loads(json.dumps(new))
    for field in checkpoint.ADDED_FIELDS:
        *parents, key = field.split(".")
        node = saved
        for parent in parents:
            node = node[parent]
        node.pop(key, None)
    assert checkpoint.config_differences(saved, new) == []
    # and a finished one stays finished: no field differs, structural or not
    assert checkpoint.config_differences(saved, new, structural_only=False) == []


def damage(workdir, step: int) -> None:
    """Truncates every array file of checkpoint `step` to 0 bytes, as a disk error or an
    interrupted copy between machines would."""
    state = os.path.join(workdir, "checkpoints", str(step), "state")
    for root, _, files in os.walk(state):
        if os.path.basename(root) == "d":
            for name in files:
                open(os.path.join(root, name), "w").close()


def test_a_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    resumable, tmp_path, monkeypatch, capsys
):
    straight = train.train_and_evaluate(resumable, str(tmp_path / "straight"))
    workdir = str(tmp_path / "resumed")
    with monkeypatch.context() as patch:
        stop_with_sigterm_at(patch, 6)
        train.train_and_evaluate(resumable, workdir)
    damage(workdir, 6)
    capsys.readouterr()
    resumed = train.train_and_evaluate(resumable, workdir)

    lines = [line for line in capsys.readouterr().err.splitlines() if "cannot be read" in line]
    assert len(lines) == 1
    assert lines[0].startswith("the checkpoint at step 6 cannot be read (")
    assert "checkpoints_unreadable" in lines[0]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints_unreadable"))) == ["6"]
    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(workdir))
    assert resumed == straight


def test_no_readable_checkpoint_is_one_line_and_nothing_is_deleted(
    resumable, tmp_path, monkeypatch
):
    workdir = str(tmp_path / "run")
    with monkeypatch.context() as patch:
        stop_with_sigterm_at(patch, 6)
        train.train_and_evaluate(resumable, workdir)
    for step in (4, 6):
        damage(workdir, step)
    with pytest.raises(UserError) as refused:
        train.train_and_evaluate(resumable, workdir)
    message = str(refused.value)
    assert "\n" not in message and len(message) < 800
    assert message.startswith(f"no checkpoint in {workdir}/checkpoints could be read (step 6: ")
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints_unreadable"))) == ["4", "6"]


def test_a_full_disk_during_a_save_stops_in_one_line_and_the_next_start_resumes(
    resumable, tmp_path, monkeypatch
):
    """ENOSPC from the save path (the writer patched to fail at step 8, after leaving a partial
    temporary folder, as a full disk does): one line naming the checkpoint kept; the next start
    resumes from it and ends as an uninterrupted run does."""
    straight = train.train_and_evaluate(resumable, str(tmp_path / "straight"))
    workdir = str(tmp_path / "full")
    save = ocp.CheckpointManager.save

    def save_until_the_disk_fills(self, step, *args, **kwargs):
        if step == 8:
            partial = epath.Path(self.directory) / "8.orbax-checkpoint-tmp-1"
            partial.mkdir(parents=True)
            (partial / "half_written").write_text("x")
            cause = OSError(28, "No space left on device")
            raise ValueError("Error writing the checkpoint") from cause
        return save(self, step, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ocp.CheckpointManager, "save", save_until_the_disk_fills)
        with pytest.raises(UserError) as stopped:
            train.train_and_evaluate(resumable, workdir)
    assert str(stopped.value) == (
        f"saving the checkpoint of step 8 in {workdir}/checkpoints failed: no space left on "
        "device; the checkpoint of step 4 is kept; free some space and run the same command "
        "again to resume"
    )
    resumed = train.train_and_evaluate(resumable, workdir)
    assert checkpoint_steps(workdir)[-1] == 12
    assert_trees_equal(saved_state(tmp_path / "straight"), saved_state(workdir))
    assert resumed == straight
