"""Deterministic chunked generation on all cores: the output depends on the seed, never on workers.

A generated split is cut into chunks of `chunk_size` examples; chunk `i` is made by
`make_chunk(options, seed_sequence, count)` with `seed_sequence = numpy.random.SeedSequence((seed,
stream, i))`, so any worker can make any chunk and the merged result (chunks in index order) is the
same with 1 worker or 16. `make_chunk` must be a module-level function (workers import it by name)
and return a list of examples.

Workers are started with "spawn": the parent may already run JAX's threads, which `fork` would copy
in an undefined state.
"""

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

ChunkFn = Callable[[Any, np.random.SeedSequence, int], list]


def chunk_counts(total: int, chunk_size: int) -> list[int]:
    """Sizes of the chunks that make `total` examples: full chunks, then the remainder."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be > 0")
    full, rest = divmod(total, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _make(args: tuple) -> list:
    make_chunk, options, seed, stream, index, count = args
    return make_chunk(options, np.random.SeedSequence((seed, stream, index)), count)


def generate(
    make_chunk: ChunkFn,
    options: Any,
    *,
    total: int,
    seed: int,
    stream: int = 0,
    chunk_size: int = 1_000,
    num_workers: int = 0,
) -> Iterator:
    """Yields `total` examples, chunk after chunk in index order.

    stream: tells apart independent sets drawn from one seed (e.g. 0 train, 1 validation, 2 test).
    num_workers: processes to use; 0 = every available core. With one worker, or one chunk, the
      chunks are made in this process. At most 2 * workers chunks are in flight, so memory stays
      bounded however large the split is.
    """
    jobs = [
        (make_chunk, options, seed, stream, index, count)
        for index, count in enumerate(chunk_counts(total, chunk_size))
    ]
    workers = min(num_workers or default_workers(), len(jobs))
    if workers <= 1:
        for job in jobs:
            yield from _make(job)
        return
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        pending = [pool.submit(_make, job) for job in jobs[: 2 * workers]]
        next_job = len(pending)
        while pending:
            chunk = pending.pop(0).result()
            if next_job < len(jobs):
                pending.append(pool.submit(_make, jobs[next_job]))
                next_job += 1
            yield from chunk
    finally:
        # A consumer that stops early (closes this generator, or fails) waits for no more chunks.
        pool.shutdown(wait=True, cancel_futures=True)
