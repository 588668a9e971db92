"""grain input pipelines over `tfds.data_source` splits: shuffle, pad, batch, repeat.

Batches are dicts of numpy arrays: for each token field `tokens*` an int32 [B, max_len] array and
its padding mask `mask*` (bool, True = real token), `label` int32 [B], and in evaluation batches
`weight` float32 [B] (0 for the filler rows that complete the last batch).

Training order is a pure function of the seed and the process's shard, so a run can be repeated and
its iterator state checkpointed (`iterator.get_state()` / `set_state()`).
"""

import functools
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from research.errors import UserError


def mask_field(token_field: str) -> str:
    """The batch key of a token field's padding mask: tokens -> mask, tokens1 -> mask1."""
    return token_field.replace("tokens", "mask", 1)


def pad_example(
    example: dict, *, max_len: int, sequence_fields: Sequence[str], truncate: bool = False
) -> dict:
    """One example -> fixed-length int32 tokens and masks; too long fails unless truncating."""
    out = {"label": np.int32(example["label"])}
    for field in sequence_fields:
        tokens = np.asarray(example[field])
        if len(tokens) > max_len:
            if not truncate:
                raise UserError(
                    f"an example's {field} has {len(tokens)} tokens, more than "
                    f"config.model.max_len={max_len}"
                )
            tokens = tokens[:max_len]
        padded = np.zeros(max_len, np.int32)
        padded[: len(tokens)] = tokens
        out[field] = padded
        out[mask_field(field)] = np.arange(max_len) < len(tokens)
    return out


def _sharded(source, shard_index: int, shard_count: int) -> grain.MapDataset:
    return grain.MapDataset.source(source)[shard_index::shard_count]


def train_dataset(
    source,
    *,
    batch_size: int,
    max_len: int,
    sequence_fields: Sequence[str],
    seed: int,
    truncate: bool = False,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.IterDataset:
    """Endless batches of this process's shard, reshuffled every epoch; `iter()` it to read."""
    pad = functools.partial(
        pad_example, max_len=max_len, sequence_fields=sequence_fields, truncate=truncate
    )
    dataset = _sharded(source, shard_index, shard_count).shuffle(seed).repeat(None).map(pad)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))


def eval_batches(
    source,
    *,
    batch_size: int,
    max_len: int,
    sequence_fields: Sequence[str],
    truncate: bool = False,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[dict]:
    """Every example of the shard once, in order, in batches of exactly `batch_size`.

    The last batch is completed with zero rows of weight 0, so one compiled step serves all batches
    and no example is dropped from the score.
    """
    pad = functools.partial(
        pad_example, max_len=max_len, sequence_fields=sequence_fields, truncate=truncate
    )
    dataset = _sharded(source, shard_index, shard_count).map(pad).batch(batch_size)
    for batch in dataset:
        size = len(batch["label"])
        batch["weight"] = np.ones(size, np.float32)
        if size < batch_size:
            batch = {
                key: np.concatenate(
                    [value, np.zeros((batch_size - size, *value.shape[1:]), value.dtype)]
                )
                for key, value in batch.items()
            }
        yield batch
