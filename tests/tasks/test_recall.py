"""MQAR's generated data against Zoology's definition (`multiquery_ar`, re-stated below from its
source as the oracle): token layout, query offsets and their power law, filler, vocabulary use;
then the task as the trainer sees it (dataset, vocabulary and classes from the options)."""

import dataclasses

import numpy as np
import pytest

from research import tasks
from research.errors import UserError
from research.tasks.recall import (
    NO_TARGET,
    RecallOptions,
    make_recall_chunk,
    query_offset_probabilities,
)

FIGURE2 = RecallOptions(num_pairs=8, length=128, vocab_size=8_192)


def generate(options: RecallOptions, count: int, seed: int = 0):
    examples = make_recall_chunk(options, np.random.SeedSequence(seed), count)
    tokens_NT = np.stack([t for t, _ in examples]).astype(np.int64)
    targets_NT = np.stack([y for _, y in examples]).astype(np.int64)
    return tokens_NT, targets_NT


def zoology_query_offsets(options: RecallOptions, count: int, seed: int) -> np.ndarray:
    """The gaps exactly as zoology/data/associative_recall.py draws them (numpy's legacy
    generator, `np.random.choice` without replacement under the power law)."""
    np.random.seed(seed)
    space = (options.length - 2 * options.num_pairs) // 2
    p = options.power_a * np.arange(1, space + 1) ** (options.power_a - 1)
    p = p / p.sum()
    x = np.stack([np.arange(space, dtype=int)] * count)
    return np.apply_along_axis(
        np.random.choice, axis=1, arr=x, replace=False, p=p, size=options.num_pairs
    )


def test_the_layout_is_zoologys():
    tokens_NT, targets_NT = generate(FIGURE2, 500)
    pairs, half = FIGURE2.num_pairs, FIGURE2.vocab_size // 2
    keys_NP, values_NP = tokens_NT[:, 0 : 2 * pairs : 2], tokens_NT[:, 1 : 2 * pairs : 2]
    assert ((keys_NP >= 1) & (keys_NP < half)).all()  # the lower half, never 0
    assert ((values_NP >= half) & (values_NP < FIGURE2.vocab_size)).all()
    for keys, values, tokens, targets in zip(
        keys_NP, values_NP, tokens_NT, targets_NT, strict=True
    ):
        assert len(set(keys)) == pairs and len(set(values)) == pairs
        where = np.flatnonzero(targets != NO_TARGET)
        assert len(where) == pairs
        assert ((where - 2 * pairs) % 2 == 0).all() and (where >= 2 * pairs).all()
        assert sorted(tokens[where]) == sorted(keys)  # each key queried once
        value_of = dict(zip(keys, values, strict=True))
        assert all(targets[t] == value_of[tokens[t]] - half for t in where)
        rest = np.ones(len(tokens), bool)
        rest[: 2 * pairs] = False
        rest[where] = False
        assert (tokens[rest] == 0).all()  # Figure 2's filler: the constant 0


def test_query_offsets_follow_zoologys_power_law():
    """Our offsets and Zoology's own draws, 4,000 examples each: the same distribution (how
    often each offset is taken, within sampling noise)."""
    count = 4_000
    tokens_NT, targets_NT = generate(FIGURE2, count)
    ours = [(np.flatnonzero(t != NO_TARGET) - 2 * FIGURE2.num_pairs) // 2 for t in targets_NT]
    space = (FIGURE2.length - 2 * FIGURE2.num_pairs) // 2
    ours_hist = np.bincount(np.concatenate(ours), minlength=space) / count
    theirs_hist = np.bincount(zoology_query_offsets(FIGURE2, count, 1).ravel(), minlength=space)
    theirs_hist = theirs_hist / count
    # each offset's inclusion rate is a mean of 4,000 Bernoulli draws: sd <= 0.008
    np.testing.assert_allclose(ours_hist, theirs_hist, atol=0.03)
    # and the law favours early offsets strongly, as a = 0.01 should
    assert ours_hist[:8].sum() > 2 * ours_hist[-8:].sum()


def test_the_power_law_is_zoologys_formula():
    p = query_offset_probabilities(56, 0.01)
    expected = 0.01 * np.arange(1, 57) ** (0.01 - 1)
    np.testing.assert_allclose(p, expected / expected.sum())
    np.testing.assert_allclose(query_offset_probabilities(10, 1.0), np.full(10, 0.1))


def test_random_filler_draws_from_the_whole_vocabulary():
    options = dataclasses.replace(FIGURE2, filler="random")
    tokens_NT, targets_NT = generate(options, 400)
    pairs = options.num_pairs
    filler = np.ones_like(tokens_NT, bool)
    filler[:, : 2 * pairs] = False
    filler &= targets_NT == NO_TARGET
    values = tokens_NT[filler]
    assert values.min() < 100 and values.max() > options.vocab_size - 100
    assert abs(values.mean() / options.vocab_size - 0.5) < 0.02  # uniform over 0..V-1


def test_keys_and_values_use_the_whole_half_vocabularies():
    tokens_NT, _ = generate(FIGURE2, 2_000)
    keys = tokens_NT[:, 0:16:2].ravel()
    assert len(np.unique(keys)) > 0.95 * (1 - np.exp(-len(keys) / 4095)) * 4095


def test_adjacent_queries_follow_the_pairs():
    options = dataclasses.replace(FIGURE2, queries="adjacent")
    _, targets_NT = generate(options, 50)
    where = (targets_NT != NO_TARGET).nonzero()[1].reshape(50, -1)
    assert (where == 16 + 2 * np.arange(8)).all()


def test_the_same_seed_gives_the_same_data():
    a, _ = generate(FIGURE2, 20, seed=3)
    b, _ = generate(FIGURE2, 20, seed=3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(length=63), r"length=63 must be even"),
        (dict(length=30), r"shorter than 4 \* num_pairs = 32"),
        (dict(vocab_size=16), r"vocab_size=16 must lie in 18\.\.65536"),
        (dict(power_a=0.0), r"power_a=0.0 must lie in \(0, 1\]"),
        (dict(queries="random"), r"queries='random' is not valid; choose one of: power_law"),
        (dict(filler="noise"), r"filler='noise' is not valid"),
        (dict(num_pairs=True), r"num_pairs=True is not valid; it must be an integer"),
        (dict(num_test=0), r"num_test=0: every split needs at least one example"),
    ],
)
def test_bad_options_are_one_line_naming_the_field(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(FIGURE2, **change).check("config.task_options")


def test_the_dataset_stores_wide_tokens_and_the_task_takes_its_sizes_from_the_options(tmp_path):
    """8,192 tokens need uint16 and 4,096 classes int16; the trainer's vocabulary and class count
    follow `vocab_size`, and attention maps label keys and values."""
    options = dict(num_pairs=4, length=64, vocab_size=8_192, num_train=30, num_val=5, num_test=5)
    builder = tasks.prepare_builder(tasks.get_task("recall"), options, str(tmp_path))
    example = tasks.load_sources(builder)["train"][0]
    assert example["tokens"].dtype == np.uint16 and np.asarray(example["label"]).dtype == np.int16
    tokens, targets = example["tokens"].astype(int), np.asarray(example["label"]).astype(int)
    assert tokens[:8:2].max() < 4_096 <= tokens[1:8:2].min()
    where = np.flatnonzero(targets != NO_TARGET)
    assert len(where) == 4 and targets[where].max() < 4_096
    task = tasks.get_task("recall").at_options(options)
    assert (task.vocab_size, task.num_classes) == (8_192, 4_096)
    assert [task.token_label(t) for t in (0, 5, 4_096, 4_100)] == [".", "k5", "v0", "v4"]
    small = tasks.get_task("recall").at_options(dict(options, vocab_size=256))
    assert (small.vocab_size, small.num_classes) == (256, 128)


MIX = dict(vocab_size=128, length=64, mix=((32, 4), (64, 8)), num_train=10, num_val=4, num_test=6)


def test_a_mix_holds_each_segment_at_its_own_length_and_tests_each_on_its_own(tmp_path):
    """Zoology's training mix: equal shares of every (length, pairs), each example unpadded, and
    each segment's share of the test split again as test_<length>x<pairs>."""
    builder = tasks.prepare_builder(tasks.get_task("recall"), MIX, str(tmp_path))
    sources = tasks.load_sources(builder)
    assert list(sources) == ["train", "validation", "test", "test_32x4", "test_64x8"]
    for split, size in (("train", 10), ("validation", 4), ("test", 6)):
        examples = [sources[split][i] for i in range(size)]
        shapes = [
            (len(e["tokens"]), int((np.asarray(e["label"]) != NO_TARGET).sum())) for e in examples
        ]
        assert sorted(shapes) == sorted([(32, 4), (64, 8)] * (size // 2))

    def token_set(split, size):  # the writer shuffles: compare as sets
        return {tuple(sources[split][i]["tokens"]) for i in range(size)}

    assert token_set("test", 6) == token_set("test_32x4", 3) | token_set("test_64x8", 3)
    assert {len(t) for t in token_set("test_32x4", 3)} == {32}
    # a mix read back from config.json (lists) is the same options
    assert RecallOptions(mix=[[32, 4], [64, 8]]) == RecallOptions(mix=((32, 4), (64, 8)))


@pytest.mark.parametrize(
    "mix, message",
    [
        (((32, 4), (128, 8)), r"mix has length 128 > length=64"),
        (((32, 4), (32, 4)), r"repeats a segment"),
        (((32, 4, 1),), r"mix has \(32, 4, 1\); give \(length, pairs\) pairs"),
        (((31, 4),), r"mix entry \(31, 4\): length=31 must be even"),
        (((32, 16),), r"mix entry \(32, 16\): length=32 is shorter than 4 \* num_pairs = 64"),
    ],
)
def test_bad_mixes_are_one_line_naming_the_field(mix, message):
    options = dataclasses.replace(FIGURE2, length=64, mix=mix)
    with pytest.raises(UserError, match=r"config\.task_options\.mix.*" + message.split("mix")[-1]):
        options.check("config.task_options")
