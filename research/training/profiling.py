"""`config.profile_steps`: a jax.profiler trace of a window of training steps, for XProf.

"START:STOP" traces steps START, START+1, ..., STOP-1 (a Python range; step n is the n-th
optimizer update, numbered from 1 as in metrics.jsonl) into `<workdir>/profile`; "" traces nothing.
A resumed run traces the part of the window it still has to run.
"""

import contextlib
import re
from collections.abc import Callable

import jax
from etils import epath

from research.errors import UserError

FIELD = "config.profile_steps"


def parse_steps(value: object, num_train_steps: int) -> range | None:
    """The steps that "START:STOP" names (None for ""); a one-line UserError otherwise."""
    if value == "":
        return None
    match = re.fullmatch(r"(\d+):(\d+)", value) if isinstance(value, str) else None
    if not match:
        why = "give START:STOP (e.g. '10:15' traces steps 10 to 14), or '' for no trace"
    else:
        start, stop = int(match[1]), int(match[2])
        if start < 1:
            why = "steps are numbered from 1, so START must be at least 1"
        elif stop <= start:
            why = "STOP must be greater than START (START:STOP traces steps START to STOP-1)"
        elif stop > num_train_steps + 1:
            why = (
                f"config.num_train_steps={num_train_steps}, so STOP may be at most "
                f"{num_train_steps + 1} (the last step traced is STOP-1)"
            )
        else:
            return range(start, stop)
    raise UserError(f"{FIELD}={value!r} is not valid; {why}")


class StepProfiler:
    """Starts a trace before the first step of `steps` that the loop runs and stops it after the
    last, waiting for that step's outputs so that the trace holds whole steps. As a context
    manager it also stops a trace left running when the loop ends early (signal or exception).
    """

    def __init__(
        self, steps: range | None, directory: epath.Path, say: Callable[[str], None] = print
    ):
        self.steps, self.directory, self.say = steps or range(0), directory, say
        self.active, self.traced = False, []

    def step(self, step: int, state) -> contextlib.AbstractContextManager:
        """Call around step `step` (given the state before it): starts the trace at the window's
        first step here and annotates each traced step, so XProf can split the trace into steps."""
        if step in self.steps and not self.active:
            jax.block_until_ready(state)  # earlier steps' device work stays out of the trace
            jax.profiler.start_trace(str(self.directory))
            self.active = True
        if self.active:
            self.traced.append(step)
            return jax.profiler.StepTraceAnnotation("train", step_num=step)
        return contextlib.nullcontext()

    def end_step(self, step: int, outputs) -> None:
        """Call after step `step` with its outputs: stops the trace after the window's last step."""
        if self.active and step == self.steps[-1]:
            jax.block_until_ready(outputs)
            self.stop()

    def stop(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()
            first, last = self.traced[0], self.traced[-1]
            steps = f"step {first}" if first == last else f"steps {first} to {last}"
            self.say(
                f"profiled {steps} into {self.directory}; view the trace with "
                f"`tensorboard --logdir {self.directory}` (needs tensorboard-plugin-profile)"
            )

    def __enter__(self) -> "StepProfiler":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.stop()
            return
        with contextlib.suppress(Exception):  # keep the error that ended the loop
            self.stop()
