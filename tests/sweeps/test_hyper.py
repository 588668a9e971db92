"""LRA's sweep grammar (research.sweeps.hyper): the grids experiment files build."""

import pytest

from research.errors import UserError
from research.sweeps import hyper as h


def test_sweep_and_fixed():
    assert h.sweep("config.seed", [0, 1]) == [{"config.seed": 0}, {"config.seed": 1}]
    assert h.fixed("arg.pairs", 16) == [{"arg.pairs": 16}]
    assert h.fixed("config", "configs/text.py") == [{"config": "configs/text.py"}]


def test_product_varies_the_first_factor_slowest():
    grid = h.product([h.sweep("config.a", [1, 2]), h.sweep("config.b", ["x", "y"])])
    assert grid == [
        {"config.a": 1, "config.b": "x"},
        {"config.a": 1, "config.b": "y"},
        {"config.a": 2, "config.b": "x"},
        {"config.a": 2, "config.b": "y"},
    ]


def test_zip_merges_element_wise_and_needs_equal_lengths():
    grid = h.zip([h.sweep("config.a", [1, 2]), h.sweep("arg.b", [3, 4])])
    assert grid == [{"config.a": 1, "arg.b": 3}, {"config.a": 2, "arg.b": 4}]
    with pytest.raises(UserError, match=r"equal length, got lengths \[2, 3\]"):
        h.zip([h.sweep("config.a", [1, 2]), h.sweep("config.b", [1, 2, 3])])


def test_chainit_concatenates():
    grid = h.chainit([h.sweep("config.a", [1]), h.sweep("config.b", [2, 3])])
    assert grid == [{"config.a": 1}, {"config.b": 2}, {"config.b": 3}]


def test_nesting():
    grid = h.product(
        [
            h.fixed("config.num_train_steps", 20),
            h.chainit(
                [
                    h.zip([h.sweep("config.x", [1, 2]), h.sweep("config.y", [3, 4])]),
                    h.fixed("config.x", 9),
                ]
            ),
        ]
    )
    assert grid == [
        {"config.num_train_steps": 20, "config.x": 1, "config.y": 3},
        {"config.num_train_steps": 20, "config.x": 2, "config.y": 4},
        {"config.num_train_steps": 20, "config.x": 9},
    ]


def test_a_key_twice_in_one_cell_is_an_error():
    with pytest.raises(UserError, match="'config.a' is given twice"):
        h.product([h.sweep("config.a", [1, 2]), h.fixed("config.a", 3)])


@pytest.mark.parametrize("key", ["model.attention", "config.", "arg", "arg.a.b", "cfg.seed", 3])
def test_bad_keys_are_one_line_errors_naming_the_forms(key):
    with pytest.raises(UserError) as error:
        h.sweep(key, [1])
    message = str(error.value)
    assert "\n" not in message and repr(key) in message and '"arg.<name>"' in message


def test_bad_arguments():
    with pytest.raises(UserError, match="needs a list of values"):
        h.sweep("config.a", "full")
    with pytest.raises(UserError, match="no values"):
        h.sweep("config.a", [])
    with pytest.raises(UserError, match="takes a list of grids"):
        h.product(h.sweep("config.a", [1]))  # a grid, not a list of grids
