"""Diagnostic tasks: recall labels are the values paired with the query key, distance labels compare
the two chosen positions, both are balanced and deterministic, and bad options are user errors."""

import numpy as np
import pytest

from research import tasks
from research.errors import UserError
from research.tasks import diagnostics

RECALL = dict(
    num_pairs=8,
    num_keys=16,
    num_values=16,
    length=40,
    num_train=300,
    num_val=50,
    num_test=50,
    seed=1,
)
DISTANCE = dict(
    length=48, distance=20, num_symbols=3, num_train=300, num_val=50, num_test=50, seed=1
)


def read_all(builder) -> dict[str, list]:
    return {
        split: [(s[i]["tokens"], int(s[i]["label"])) for i in range(len(s))]
        for split, s in tasks.load_sources(builder).items()
    }


@pytest.fixture(scope="module")
def recall(tmp_path_factory):
    builder = tasks.prepare_builder(
        tasks.get_task("recall"), RECALL, str(tmp_path_factory.mktemp("tfds"))
    )
    return builder, read_all(builder)


def test_recall_label_is_the_value_paired_with_the_query(recall):
    builder, splits = recall
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "validation": 50, "test": 50}
    assert builder.info.metadata["max_length"] == 40
    labels = []
    for tokens, label in (e for examples in splits.values() for e in examples):
        assert len(tokens) == 40
        pairs = tokens[:16].reshape(8, 2)
        keys, values = pairs[:, 0] - diagnostics.FIRST_KEY, pairs[:, 1] - diagnostics.FIRST_VALUE
        assert len(set(keys)) == 8 and len(set(values)) == 8
        assert keys.max() < 16 and values.max() < 16 and keys.min() >= 0 and values.min() >= 0
        assert (tokens[16:-1] == diagnostics.FILLER).all()
        query = tokens[-1] - diagnostics.FIRST_KEY
        assert query in set(keys)
        assert label == values[list(keys).index(query)]
        labels.append(label)
    assert len(set(labels)) == 16


def test_recall_is_deterministic(recall, tmp_path):
    _, splits = recall
    again = read_all(tasks.prepare_builder(tasks.get_task("recall"), RECALL, str(tmp_path)))
    for split in splits:
        for (a, label_a), (b, label_b) in zip(splits[split], again[split], strict=True):
            np.testing.assert_array_equal(a, b)
            assert label_a == label_b


def test_distance_label_compares_the_two_positions(tmp_path):
    builder = tasks.prepare_builder(tasks.get_task("distance"), DISTANCE, str(tmp_path))
    examples = [e for split in read_all(builder).values() for e in split]
    for tokens, label in examples:
        assert len(tokens) == 48 and tokens.min() >= 1 and tokens.max() <= 3
        assert label == int(tokens[0] == tokens[20])
    assert 0.4 < np.mean([label for _, label in examples]) < 0.6
    # Away from the two positions the symbols carry no information about the label.
    others = np.array([tokens[1] == tokens[21] for tokens, _ in examples])
    assert 0.2 < others.mean() < 0.5


@pytest.mark.parametrize(
    "task, options, message",
    [
        ("recall", dict(num_pairs=20), "num_pairs=20 must lie in 1..min"),
        ("recall", dict(num_pairs=8, length=10), "shorter than 2 \\* num_pairs \\+ 1"),
        ("recall", dict(num_keys=100, num_pairs=2), "at most 64"),
        ("recall", dict(pairs=8), "unknown field"),
        ("distance", dict(length=10, distance=10), "distance=10 must lie in 1..length-1"),
        ("distance", dict(num_symbols=1), "num_symbols=1 must lie in 2..16"),
        ("distance", dict(num_train=-1), "num_train=-1 must be an integer >= 0"),
        ("distance", dict(num_test=0), "num_test=0: every split needs at least one example"),
    ],
)
def test_bad_options(task, options, message):
    with pytest.raises(UserError, match=message):
        tasks.get_task(task).builder_config(options)
