"""The grain pipeline: padding and masks, determinism, sharding, complete evaluation batches."""

import numpy as np
import pytest

from research.errors import UserError
from research.tasks import pipeline


def make_source(n: int) -> list[dict]:
    return [{"tokens": np.arange(1, 2 + i % 7, dtype=np.uint8), "label": i} for i in range(n)]


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_pad_example_masks_real_tokens():
    out = pipeline.pad_example(
        {"tokens": np.array([5, 6, 7]), "label": 3}, max_len=5, sequence_fields=("tokens",)
    )
    assert out["tokens"].tolist() == [5, 6, 7, 0, 0] and out["tokens"].dtype == np.int32
    assert out["mask"].tolist() == [True, True, True, False, False]
    assert out["label"] == 3


def test_too_long_is_an_error_unless_truncating():
    example = {"tokens": np.arange(1, 9), "label": 0}
    with pytest.raises(UserError, match="8 tokens, more than config.model.max_len=4"):
        pipeline.pad_example(example, max_len=4, sequence_fields=("tokens",))
    out = pipeline.pad_example(example, max_len=4, sequence_fields=("tokens",), truncate=True)
    assert out["tokens"].tolist() == [1, 2, 3, 4] and out["mask"].all()


def test_two_token_fields_get_their_own_masks():
    example = {"tokens1": np.array([1]), "tokens2": np.array([2, 3]), "label": 1}
    out = pipeline.pad_example(example, max_len=3, sequence_fields=("tokens1", "tokens2"))
    assert out["mask1"].tolist() == [True, False, False]
    assert out["mask2"].tolist() == [True, True, False]


def _train(source, seed, **kwargs):
    """Global batches of 4 (or this shard's rows of them)."""
    dataset = pipeline.train_dataset(
        source, batch_size=4, max_len=8, sequence_fields=("tokens",), seed=seed, **kwargs
    )
    return iter(dataset)


def test_training_order_is_a_function_of_the_seed():
    source = make_source(20)
    first = [b["label"].tolist() for b in take(_train(source, 0), 12)]
    again = [b["label"].tolist() for b in take(_train(source, 0), 12)]
    other = [b["label"].tolist() for b in take(_train(source, 1), 12)]
    assert first == again and first != other


def test_each_epoch_is_a_permutation_reshuffled():
    source = make_source(20)
    labels = np.concatenate([b["label"] for b in take(_train(source, 0), 10)])
    epoch1, epoch2 = labels[:20], labels[20:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(20))
    assert epoch1.tolist() != epoch2.tolist()


def test_processes_read_disjoint_rows_of_the_same_global_batches():
    source = make_source(24)
    single = [b["label"].tolist() for b in take(_train(source, 0), 12)]  # two epochs
    shards = [take(_train(source, 0, shard_index=i, shard_count=2), 12) for i in range(2)]
    combined = [a["label"].tolist() + b["label"].tolist() for a, b in zip(*shards, strict=True)]
    assert shards[0][0]["label"].shape == (2,)
    assert combined == single
    first_epoch = [label for batch in combined[:6] for label in batch]
    assert sorted(first_epoch) == list(range(24))


def test_iterator_state_restores_position():
    iterator = _train(make_source(20), 0)
    take(iterator, 3)
    state = iterator.get_state()
    expected = [b["label"].tolist() for b in take(iterator, 4)]
    resumed = _train(make_source(20), 0)
    resumed.set_state(state)
    assert [b["label"].tolist() for b in take(resumed, 4)] == expected


def test_eval_batches_cover_every_example_once_with_fixed_shape():
    batches = list(
        pipeline.eval_batches(make_source(10), batch_size=4, max_len=8, sequence_fields=("tokens",))
    )
    assert [b["tokens"].shape for b in batches] == [(4, 8)] * 3
    weights = np.concatenate([b["weight"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert weights.tolist() == [1.0] * 10 + [0.0] * 2
    assert labels[:10].tolist() == list(range(10))


def test_eval_shards_run_the_same_number_of_batches_and_cover_everything():
    source = make_source(10)
    shards = [
        list(
            pipeline.eval_batches(
                source,
                batch_size=4,
                max_len=8,
                sequence_fields=("tokens",),
                shard_index=i,
                shard_count=2,
            )
        )
        for i in range(2)
    ]
    assert [len(batches) for batches in shards] == [3, 3]
    assert all(b["tokens"].shape == (2, 8) for batches in shards for b in batches)
    seen = [
        int(label)
        for batches in shards
        for batch in batches
        for label, weight in zip(batch["label"], batch["weight"], strict=True)
        if weight
    ]
    assert sorted(seen) == list(range(10))
