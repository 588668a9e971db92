"""grain input pipelines over `tfds.data_source` splits: shuffle, pad, batch, repeat.

Batches are dicts of numpy arrays: for each token field `tokens*` an int32 [B, max_len] array and
its padding mask `mask*` (bool, True = real token), `label` int32 [B] (or [B, max_len] for tasks
with a target per position, -1 where there is none; [B, K] with `target_positions` [B, K] for a
task whose examples have at most K targets, `Task.max_targets`), and in evaluation batches
`weight` float32 [B] (0 for the filler rows that complete the last batch).

Training order is a pure function of the seed and the process's shard, so a run can be repeated and
its iterator state checkpointed (`iterator.get_state()` / `set_state()`).
"""

import functools
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from research.errors import UserError
from research.intmath import ceil_div


def mask_field(token_field: str) -> str:
    """The batch key of a token field's padding mask: tokens -> mask, tokens1 -> mask1."""
    return token_field.replace("tokens", "mask", 1)


def pad_example(
    example: dict,
    *,
    max_len: int,
    sequence_fields: Sequence[str],
    truncate: bool = False,
    max_targets: int | None = None,
) -> dict:
    """One example -> fixed-length int32 tokens and masks; too long fails unless truncating.

    A per-position label (a sequence, -1 = no target) is cut and padded like the tokens; with
    `max_targets` = K it is kept only where there is a target: `label` [K] (-1 past the last
    target) and `target_positions` [K] (their positions in order, 0 past the last). An example
    without a label (`inputs_only`) gives the token fields and masks alone.
    """
    out = {}
    if "label" in example:
        label = np.asarray(example["label"], np.int32)
        out["label"] = fixed_length(label, max_len, fill=-1) if label.ndim else label
    if "label" in example and label.ndim and max_targets is not None:
        positions = np.flatnonzero(out["label"] >= 0)
        if len(positions) > max_targets:
            raise ValueError(f"an example has {len(positions)} targets, more than {max_targets}")
        out["label"] = fixed_length(out["label"][positions], max_targets, fill=-1)
        out["target_positions"] = fixed_length(positions, max_targets, fill=0)
    for field in sequence_fields:
        tokens = np.asarray(example[field])
        if len(tokens) > max_len:
            if not truncate:
                raise UserError(
                    f"an example's {field} has {len(tokens)} tokens, more than "
                    f"config.model.max_len={max_len}"
                )
            tokens = tokens[:max_len]
        out[field] = fixed_length(tokens, max_len, fill=0)
        out[mask_field(field)] = np.arange(max_len) < len(tokens)
    return out


def inputs_of(example: dict, *, sequence_fields: Sequence[str]) -> dict:
    """An example's token fields alone (no label, nothing else)."""
    return {field: example[field] for field in sequence_fields}


def fixed_length(values: np.ndarray, max_len: int, *, fill: int) -> np.ndarray:
    """int32 [max_len]: `values` cut to `max_len`, then padded with `fill`."""
    out = np.full(max_len, fill, np.int32)
    values = values[:max_len]
    out[: len(values)] = values
    return out


def train_dataset(
    source,
    *,
    batch_size: int,
    max_len: int,
    sequence_fields: Sequence[str],
    seed: int,
    truncate: bool = False,
    max_targets: int | None = None,
    inputs_only: bool = False,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.IterDataset:
    """Endless batches: this process's rows of every global batch; `iter()` it to read.

    `inputs_only`: batches of the token fields and their masks alone, no label (what pretraining
    reads: research/training/pretrain.py).

    Global batch b holds examples [b*B, (b+1)*B) of the stream that shuffles the whole split
    (reseeded every epoch); process i of p reads only rows [i*B/p, (i+1)*B/p) of it. So the global
    batches, and hence training, are the same for any number of processes, and within an epoch no
    example is read twice or by two processes.
    """
    pad = functools.partial(
        pad_example,
        max_len=max_len,
        sequence_fields=sequence_fields,
        truncate=truncate,
        max_targets=max_targets,
    )
    dataset = grain.MapDataset.source(source).shuffle(seed).repeat(None)
    if inputs_only:
        dataset = dataset.map(functools.partial(inputs_of, sequence_fields=sequence_fields))
    dataset = dataset.map(pad)
    dataset = dataset.batch(batch_size // shard_count, drop_remainder=True)
    dataset = dataset[shard_index::shard_count]
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))


def eval_batches(
    source,
    *,
    batch_size: int,
    max_len: int,
    sequence_fields: Sequence[str],
    truncate: bool = False,
    max_targets: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[dict]:
    """Every example once, in order, as this process's rows of global batches of `batch_size`.

    Rows past the end are zero with weight 0, so every batch has the same shape (one compiled
    step), every process runs the same number of steps, and no example is dropped from the score.
    """
    pad = functools.partial(
        pad_example,
        max_len=max_len,
        sequence_fields=sequence_fields,
        truncate=truncate,
        max_targets=max_targets,
    )
    local_size = batch_size // shard_count
    num_batches = ceil_div(len(source), batch_size)
    dataset = grain.MapDataset.source(source).map(pad).batch(local_size)[shard_index::shard_count]
    empty = {k: np.zeros((0, *np.shape(v)), np.asarray(v).dtype) for k, v in pad(source[0]).items()}
    rows = iter(dataset)
    for _ in range(num_batches):
        batch = next(rows, empty)  # empty: this process's part of the last global batch
        size = len(batch["label"])
        batch = dict(batch, weight=np.ones(size, np.float32))
        yield {
            key: np.concatenate(
                [value, np.zeros((local_size - size, *value.shape[1:]), value.dtype)]
            )
            for key, value in batch.items()
        }
