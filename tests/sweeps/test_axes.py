"""A sweep's axes (research.sweeps.axes): which keys vary, which follow from others, short names."""

from research.sweeps.axes import independent_keys, short_names, varying_keys


def test_independent_keys_drop_keys_the_earlier_ones_determine():
    cells = [
        {"task": "listops", "seed": 0},
        {"task": "listops", "seed": 1},
        {"task": "text", "source": "imdb", "seed": 0},
        {"task": "text", "source": "imdb", "seed": 1},
    ]
    assert independent_keys(["task", "source", "seed"], cells) == ["task", "seed"]
    assert independent_keys(["source", "task", "seed"], cells) == ["source", "seed"]
    assert independent_keys(["task"], [{"task": "a"}, {"task": "a"}]) == []


def test_varying_keys_count_a_missing_key_as_a_difference():
    cells = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 0}]
    assert varying_keys(cells) == ["b", "c"]


def test_short_names_are_unique_suffixes():
    keys = ["config.model.attention", "arg.attention", "config.seed"]
    assert short_names(keys) == {
        "config.model.attention": "model.attention",
        "arg.attention": "arg.attention",
        "config.seed": "seed",
    }
