"""The distance diagnostic: targets compare each position with the one `distance` back, balanced and
deterministic, re-derived here from the tokens alone; bad options of the generated tasks are user
errors (MQAR's data: test_recall.py)."""

import numpy as np
import pytest

from research import tasks
from research.errors import UserError

DISTANCE = dict(
    length=48, distance=20, num_symbols=3, num_train=300, num_val=50, num_test=50, seed=1
)


def read_all(builder) -> dict[str, list]:
    return {
        split: [(s[i]["tokens"], np.asarray(s[i]["label"])) for i in range(len(s))]
        for split, s in tasks.load_sources(builder).items()
    }


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
        ("recall", dict(pairs=8), "unknown field"),
        ("recall", dict(queries="end"), "queries='end' is not valid; choose one of: power_law"),
        ("distance", dict(length=10, distance=10), "distance=10 must lie in 1..length-1"),
        ("distance", dict(num_symbols=1), "num_symbols=1 must lie in 2..16"),
        ("distance", dict(num_train=-1), "num_train=-1 is not valid; it must be an integer >= 0"),
        ("distance", dict(num_test=0), "num_test=0: every split needs at least one example"),
    ],
)
def test_bad_options(task, options, message):
    with pytest.raises(UserError, match=message):
        tasks.get_task(task).builder_config(options)
