"""config.profile_steps: parsing, the trace window (resumes, early stops), and a profiled tiny run
that writes an XProf trace and trains exactly as an unprofiled one."""

import jax
import jax.numpy as jnp
import pytest
from jax.profiler import ProfileData

from research.errors import UserError
from research.training.profiling import StepProfiler, parse_steps
from research.training.train import train_and_evaluate


def traced_steps(directory) -> list[int]:
    """The step numbers of the step annotations in the one trace under `directory`."""
    (path,) = directory.glob("plugins/profile/*/*.xplane.pb")
    events = (
        event
        for plane in ProfileData.from_file(str(path)).planes
        for line in plane.lines
        for event in line.events
        if event.name == "train"
    )
    return sorted(dict(event.stats)["step_num"] for event in events)


@jax.jit
def update(state):
    return state + 1


def run_loop(profiler: StepProfiler, steps, stop_after=None) -> None:
    """A stand-in for the training loop: one jitted update per step, as train.py calls it."""
    state = jnp.zeros(4)
    with profiler:
        for step in steps:
            with profiler.step(step, state):
                state = update(state)
            profiler.end_step(step, state)
            if step == stop_after:
                raise KeyboardInterrupt


@pytest.mark.parametrize(
    "value, expected",
    [("", None), ("10:15", range(10, 15)), ("1:2", range(1, 2)), ("20:21", range(20, 21))],
)
def test_valid_values(value, expected):
    assert parse_steps(value, 20) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "config.profile_steps='abc' is not valid; give START:STOP \\(e.g. '10:15'"),
        ("3", "config.profile_steps='3' is not valid; give START:STOP"),
        ("-1:3", "config.profile_steps='-1:3' is not valid; give START:STOP"),
        ("10:", "config.profile_steps='10:' is not valid; give START:STOP"),
        (" 1:3", "config.profile_steps=' 1:3' is not valid; give START:STOP"),
        (12, "config.profile_steps=12 is not valid; give START:STOP"),
        ("0:3", "'0:3' is not valid; steps are numbered from 1, so START must be at least 1"),
        ("15:10", "'15:10' is not valid; STOP must be greater than START"),
        ("5:5", "'5:5' is not valid; STOP must be greater than START"),
        ("10:22", "'10:22' is not valid; config.num_train_steps=20, so STOP may be at most 21"),
        ("30:40", "config.num_train_steps=20, so STOP may be at most 21"),
    ],
)
def test_invalid_values_are_one_line_errors(value, message):
    with pytest.raises(UserError, match=message) as error:
        parse_steps(value, 20)
    assert "\n" not in str(error.value)


def test_bad_value_fails_before_writing_anything(tiny_listops, tmp_path):
    tiny_listops.profile_steps = "15:10"
    with pytest.raises(UserError, match="config.profile_steps='15:10' is not valid"):
        train_and_evaluate(tiny_listops, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "first, traced",
    [(1, [3, 4, 5]), (5, [5]), (6, [])],  # a fresh run; resumed inside; resumed past the window
)
def test_traces_the_part_of_the_window_the_loop_runs(tmp_path, first, traced):
    said, directory = [], tmp_path / "profile"
    run_loop(StepProfiler(range(3, 6), directory, said.append), range(first, 9))
    if traced:
        assert traced_steps(directory) == traced and len(said) == 1
    else:
        assert not directory.exists() and not said


def test_a_loop_stopped_inside_the_window_still_writes_its_trace(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_loop(StepProfiler(range(3, 6), tmp_path / "a", print), range(1, 9), stop_after=4)
    assert traced_steps(tmp_path / "a") == [3, 4]
    run_loop(StepProfiler(range(1, 2), tmp_path / "b", print), range(1, 3))  # no trace left on
    assert traced_steps(tmp_path / "b") == [1]


def test_profiled_run_writes_a_trace_and_trains_the_same(tiny_listops, tmp_path):
    tiny_listops.update(num_train_steps=10, eval_every_steps=0)
    plain = train_and_evaluate(tiny_listops, str(tmp_path / "plain"))
    tiny_listops.profile_steps = "4:7"
    profiled = train_and_evaluate(tiny_listops, str(tmp_path / "profiled"))
    assert profiled == plain
    assert traced_steps(tmp_path / "profiled" / "profile") == [4, 5, 6]
    assert not (tmp_path / "plain" / "profile").exists()
