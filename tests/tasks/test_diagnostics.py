"""Diagnostic tasks: MQAR targets are the values paired with each queried key, distance targets
compare each position with the one `distance` back; both are balanced, deterministic, and bad
options are user errors. Labels are re-derived here from the tokens alone."""

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
        split: [(s[i]["tokens"], np.asarray(s[i]["label"])) for i in range(len(s))]
        for split, s in tasks.load_sources(builder).items()
    }


def recall_targets(tokens: np.ndarray) -> np.ndarray:
    """Plain re-derivation: a key seen before is a query; its target is the token after the key's
    first appearance, as a value index. -1 elsewhere."""
    targets = np.full(len(tokens), -1)
    first_seen = {}
    for t, token in enumerate(tokens):
        is_key = diagnostics.FIRST_KEY <= token < diagnostics.FIRST_VALUE
        if is_key and token in first_seen:
            targets[t] = tokens[first_seen[token] + 1] - diagnostics.FIRST_VALUE
        elif is_key:
            first_seen[token] = t
    return targets


@pytest.fixture(scope="module")
def recall(tmp_path_factory):
    builder = tasks.prepare_builder(
        tasks.get_task("recall"), RECALL, str(tmp_path_factory.mktemp("tfds"))
    )
    return builder, read_all(builder)


def test_recall_targets_are_the_values_paired_with_the_queried_keys(recall):
    builder, splits = recall
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "validation": 50, "test": 50}
    assert builder.info.metadata["max_length"] == 40
    targets_seen, query_positions = [], []
    for tokens, targets in (e for examples in splits.values() for e in examples):
        assert len(tokens) == len(targets) == 40
        np.testing.assert_array_equal(targets, recall_targets(tokens))
        pairs = tokens[:16].reshape(8, 2)
        keys, values = pairs[:, 0] - diagnostics.FIRST_KEY, pairs[:, 1] - diagnostics.FIRST_VALUE
        assert len(set(keys)) == 8 and len(set(values)) == 8
        assert keys.min() >= 0 and keys.max() < 16 and values.min() >= 0 and values.max() < 16
        queries = np.flatnonzero(targets >= 0)
        assert len(queries) == 8 and queries.min() >= 16  # every key queried once, after the pairs
        assert sorted(tokens[queries]) == sorted(pairs[:, 0])
        # The answer never sits at the query: only the pairs hold values.
        assert (tokens[16:] < diagnostics.FIRST_VALUE).all()
        rest = np.setdiff1d(np.arange(16, 40), queries)
        assert (tokens[rest] == diagnostics.FILLER).all()
        targets_seen.extend(targets[queries])
        query_positions.extend(queries)
    assert len(set(targets_seen)) == 16
    assert max(query_positions) == 39 and len(set(query_positions)) == 24  # spread, not packed


def test_adjacent_queries_follow_the_pairs(tmp_path):
    options = dict(RECALL, queries="adjacent", num_train=20, num_val=5, num_test=5)
    builder = tasks.prepare_builder(tasks.get_task("recall"), options, str(tmp_path))
    for tokens, targets in read_all(builder)["train"]:
        np.testing.assert_array_equal(np.flatnonzero(targets >= 0), np.arange(16, 24))
        np.testing.assert_array_equal(targets, recall_targets(tokens))


def test_recall_is_deterministic(recall, tmp_path):
    _, splits = recall
    again = read_all(tasks.prepare_builder(tasks.get_task("recall"), RECALL, str(tmp_path)))
    for split in splits:
        for (a, targets_a), (b, targets_b) in zip(splits[split], again[split], strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(targets_a, targets_b)


def test_distance_targets_compare_each_position_with_the_one_distance_back(tmp_path):
    builder = tasks.prepare_builder(tasks.get_task("distance"), DISTANCE, str(tmp_path))
    examples = [e for split in read_all(builder).values() for e in split]
    for tokens, targets in examples:
        assert len(tokens) == len(targets) == 48 and tokens.min() >= 1 and tokens.max() <= 3
        assert (targets[:20] == -1).all()
        np.testing.assert_array_equal(targets[20:], tokens[20:] == tokens[:-20])
    targets_NT = np.stack([targets for _, targets in examples])[:, 20:]
    assert 0.45 < targets_NT.mean() < 0.55
    assert (targets_NT.mean(axis=0) > 0.3).all() and (targets_NT.mean(axis=0) < 0.7).all()
    # Any other offset carries no information about the target: matches there are at chance.
    tokens_NT = np.stack([tokens for tokens, _ in examples])
    other = tokens_NT[:, 20:] == tokens_NT[:, 19:-1]
    assert abs(other.mean() - 1 / 3) < 0.05
    assert abs(np.corrcoef(other.ravel(), targets_NT.ravel())[0, 1]) < 0.05


@pytest.mark.parametrize(
    "task, options, message",
    [
        ("recall", dict(num_pairs=20, num_keys=16), "num_pairs=20 must lie in 1..min"),
        ("recall", dict(num_pairs=8, length=20), "shorter than 3 \\* num_pairs"),
        ("recall", dict(num_keys=100, num_pairs=2), "at most 64"),
        ("recall", dict(queries="end"), "queries='end' is not valid; choose one of: random"),
        ("recall", dict(pairs=8), "unknown field"),
        ("distance", dict(length=10, distance=10), "distance=10 must lie in 1..length-1"),
        ("distance", dict(num_symbols=1), "num_symbols=1 must lie in 2..16"),
        ("distance", dict(num_train=-1), "num_train=-1 is not valid; it must be an integer >= 0"),
        ("distance", dict(num_test=0), "num_test=0: every split needs at least one example"),
    ],
)
def test_bad_options(task, options, message):
    with pytest.raises(UserError, match=message):
        tasks.get_task(task).builder_config(options)
