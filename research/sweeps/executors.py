"""Where a sweep's cells run: local processes (K at once) or a submitit job array (SLURM, or
submitit's local executor), with one progress line per finished cell.

A cell travels as its record (research.sweeps.cells.Cell: plain data, picklable for submitit); a
finished attempt is a result dict: returncode, status (research.sweeps.cells.status), error (one
line, or None), seconds.
"""

import ctypes
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from research.errors import UserError, error_message
from research.sweeps.cells import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    Cell,
    read_json,
    start_folder,
    status,
)

PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------- one cell


def die_with_parent() -> None:
    """preexec_fn: the kernel sends the cell SIGTERM when the sweep dies, even by SIGKILL, so a
    killed sweep leaves no orphans; the cell checkpoints on SIGTERM and exits 75."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_slots(cpus: list[int], parallel: int) -> list[frozenset[int]] | None:
    """`parallel` disjoint groups of consecutive `cpus`, as even as they split (the first ones one
    larger), one per local worker; None when there are fewer CPUs than workers (nothing to split).

    XLA sizes its thread pool by the CPUs a process may run on. Unpinned, K cells each start as
    many threads as there are cores, and their threads preempt one another. Measured with 2 cells
    at once on 2 cores (Zoology's (128, 8) panel, 250 steps, 2026-12-07): linear attention at
    width 128 trained 1.49 steps/s pinned against 1.37 unpinned; full attention at width 64, a
    lighter step, 2.79 against 2.91 (it gains from borrowing the other core while that one waits).
    """
    if parallel < 2 or len(cpus) < parallel:
        return None
    cpus = sorted(cpus)
    share, extra = divmod(len(cpus), parallel)
    starts = [i * share + min(i, extra) for i in range(parallel + 1)]
    return [frozenset(cpus[a:b]) for a, b in zip(starts, starts[1:], strict=False)]


def cpu_list(cpus: frozenset[int]) -> str:
    """CPUs as taskset writes them: 0-3 for a range, else 0,2."""
    low, high = min(cpus), max(cpus)
    return f"{low}-{high}" if len(cpus) == high - low + 1 > 1 else ",".join(map(str, sorted(cpus)))


def host_cpu_slots(parallel: int) -> list[frozenset[int]] | None:
    """cpu_slots of the CPUs this process may use, where the platform can pin (Linux)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    return cpu_slots(list(os.sched_getaffinity(0)), parallel)


def last_error(log: Path, offset: int) -> str:
    """The one-line error of an attempt: the last `error:` line of its log, else its last line."""
    with open(log, "rb") as file:
        file.seek(offset)
        text = file.read().decode(errors="replace")
    # tqdm redraws with carriage returns: only the last part of such a line was ever visible
    lines = [line.split("\r")[-1].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [message for line in lines if (message := error_message(line)) is not None]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"


def run_cell(
    cell: Cell,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    cpus: frozenset[int] | None = None,
) -> dict:
    """Runs one cell's training process to its end, output appended to <workdir>/log.txt; pinned
    to `cpus` when given (a local worker's cpu_slots share).

    Module-level so that submitit can pickle it. Returns returncode, status (finished | failed |
    interrupted), error (one line, or None), seconds and the process's pid.
    """

    def prepare_child() -> None:
        die_with_parent()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    started = time.monotonic()
    folder = start_folder(cell)
    log = folder / "log.txt"
    with open(log, "ab") as out:
        offset = out.tell()
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {cell.launch_line()}\n".encode())
        out.flush()
        process = subprocess.Popen(
            cell.train_command(),
            cwd=cell.cwd,
            env={**os.environ, **cell.env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # its own session: a Ctrl-C in the terminal reaches the sweep only, which forwards it
            # once (a second SIGINT would make the cell abort without a checkpoint)
            start_new_session=True,
            preexec_fn=prepare_child,
        )
        if on_start:
            on_start(process)
        try:
            returncode = process.wait()
        except KeyboardInterrupt:  # a submitit job being cancelled: let the cell checkpoint
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
    outcome = status(folder, returncode)
    error = last_error(log, offset) if outcome == FAILED else None  # the sweep records it
    seconds = time.monotonic() - started
    return {
        "returncode": returncode,
        "status": outcome,
        "error": error,
        "seconds": seconds,
        "pid": process.pid,
    }


# ----------------------------------------------------------------------------- progress


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def test_score(workdir: str) -> str:
    try:
        return f"test {read_json(Path(workdir, 'results.json'))['test_accuracy']:.4f}"
    except (KeyError, TypeError, ValueError):
        return "no test score"


_SAY = threading.Lock()


def say(line: str) -> None:
    """Prints one whole line: worker threads and the main thread print concurrently."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@dataclasses.dataclass
class Progress:
    """Numbers and prints one line per cell that is done, with an estimate of the time left."""

    total: int
    parallel: int
    to_run: int = 0
    done: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    run_seconds: list[float] = dataclasses.field(default_factory=list)

    def line(self, name: str, text: str, seconds: float | None = None) -> None:
        self.done += 1
        timing = ""
        if seconds is not None:
            self.run_seconds.append(seconds)
            timing = f"  | elapsed {duration(time.monotonic() - self.started)}"
            left = self.to_run - len(self.run_seconds)
            if left > 0:
                mean = sum(self.run_seconds) / len(self.run_seconds)
                estimate = mean * left / max(1, min(self.parallel, left))
                timing += f", about {duration(estimate)} left"
        say(f"[{self.done}/{self.total}] {name}  {text}{timing}")

    def start(self, cell: Cell) -> None:
        """A line when a cell starts, so a long first cell is not a silent wait."""
        log = os.path.join(cell.workdir, "log.txt")
        say(f"  started {cell.name}  (its output: {log})")

    def result(self, cell: Cell, result: dict) -> None:
        seconds = result.get("seconds")
        if result["status"] == FINISHED:
            text = f"finished in {duration(seconds)}  {test_score(cell.workdir)}"
        elif result["status"] == INTERRUPTED:
            text = "interrupted (its checkpoint resumes it)"
        else:
            text = f"FAILED: {result['error']}"
        self.line(cell.name, text, seconds)


class StopSignals:
    """While active, SIGINT and SIGTERM stop the sweep from launching cells and are passed on to
    the running ones through `forward(signum)` (which must not block for long)."""

    def __init__(self, forward: Callable[[int], None]):
        self.forward = forward
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def handle(self, signum: int, frame) -> None:
        if self.received is None:  # os.write: print() may not be re-entered from a handler
            name = signal.Signals(signum).name
            message = f"\n{name}: launching no more cells; running cells save a checkpoint\n"
            os.write(sys.stdout.fileno(), message.encode())
        self.received = signum
        self.forward(signum)

    def __enter__(self) -> "StopSignals":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


# ----------------------------------------------------------------------------- executors


def run_local(cells: list[Cell], parallel: int, progress: Progress) -> tuple[dict, bool]:
    """Runs the cells as child processes, `parallel` at once (a thread waits on each), each
    worker's cells pinned to its own share of the CPUs (host_cpu_slots) where there are enough.

    Returns ({name: result} of the cells that ran, whether a signal stopped the sweep).
    """
    pending = list(cells)
    running: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    done: queue.Queue = queue.Queue()

    def forward(signum: int) -> None:
        with lock:
            for process in running.values():
                process.send_signal(signum)

    stop = StopSignals(forward)

    def register(process: subprocess.Popen) -> None:
        with lock:
            running[process.pid] = process
            if stop.received is not None:  # the signal came while it was being started
                process.send_signal(stop.received)

    slots = host_cpu_slots(parallel)
    if slots and len(cells) > 1:
        say("each worker's cells run on their own CPUs: " + " | ".join(map(cpu_list, slots)))
    slots = slots or [None] * parallel

    def worker(cpus: frozenset[int] | None) -> None:
        while True:
            with lock:
                if stop.received is not None or not pending:
                    return
                cell = pending.pop(0)
                progress.start(cell)
            try:
                result = run_cell(cell, on_start=register, cpus=cpus)
            except Exception as error:  # e.g. a full disk: fail the cell, keep the sweep going
                result = {"returncode": None, "status": FAILED, "error": str(error)}
            with lock:
                running.pop(result.get("pid"), None)
            done.put((cell, result))

    results = {}
    with stop:
        threads = [threading.Thread(target=worker, args=(cpus,), daemon=True) for cpus in slots]
        for thread in threads[: len(cells)]:
            thread.start()
        while any(t.is_alive() for t in threads) or not done.empty():
            try:
                cell, result = done.get(timeout=0.2)
            except queue.Empty:
                continue
            results[cell.name] = result
            progress.result(cell, result)
    return results, stop.received is not None


def parse_parameters(items: list[str]) -> dict[str, Any]:
    """--slurm KEY=VALUE items as submitit parameters; integers become ints."""
    parameters: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm {item!r} is not valid; give KEY=VALUE, e.g. timeout_min=120")
        parameters[key] = int(value) if value.lstrip("-").isdigit() else value
    return parameters


def run_submitit(
    cells: list[Cell], cluster: str, parameters: dict[str, Any], folder: str, progress: Progress
) -> tuple[dict, bool]:
    """Submits the cells as one job array and waits for them; a signal cancels the array
    (each job passes it on to its cell, which checkpoints)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        executor.update_parameters(**parameters)
    except Exception as error:
        raise UserError(f"submitit ({cluster}): {str(error).splitlines()[0]}") from error
    jobs = executor.map_array(run_cell, cells)
    print(f"submitted {len(jobs)} cells as job array {jobs[0].job_id.split('_')[0]} ({folder})")
    waiting = dict(zip(jobs, cells, strict=True))

    def cancel(signum: int) -> None:
        for job in waiting:
            job.cancel(check=False)

    results = {}
    with StopSignals(cancel) as stop:
        while waiting and stop.received is None:
            for job in [job for job in waiting if job.done()]:
                cell = waiting.pop(job)
                results[cell.name] = job_result(job)
                progress.result(cell, results[cell.name])
            time.sleep(0.5)
    return results, stop.received is not None


def job_result(job) -> dict:
    """A finished job's result; a job that died before returning one (cancelled, out of time,
    out of memory) is a failed cell with the last line of submitit's error."""
    try:
        return job.result()
    except Exception as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        return {"returncode": None, "status": FAILED, "error": lines[-1] if lines else "?"}
