"""The `FILE[:key=value,...]` spec string (research.cli.config_spec): parse and pack round
trip, typed values, and a one-line UserError naming the bad item."""

import pytest

from research.cli.config_spec import pack_arg, pack_spec, parse_arg, parse_spec, split_spec
from research.errors import UserError


def test_specs_split_parse_and_pack_back():
    spec = "configs/recall.py:size=tiny,pairs=16"
    assert split_spec(spec) == ("configs/recall.py", "size=tiny,pairs=16")
    assert split_spec("configs/text.py") == ("configs/text.py", "")
    path, args = parse_spec(spec)
    assert (path, args) == ("configs/recall.py", {"size": "tiny", "pairs": "16"})
    assert pack_spec(path, args) == spec
    assert pack_spec("configs/text.py", {}) == "configs/text.py"
    assert parse_spec("configs/text.py") == ("configs/text.py", {})


def test_parse_arg_types_values_from_the_schema_and_keeps_defaults():
    schema = dict(size=("base", str), pairs=(8, int), rate=0.5, fast=False)
    assert parse_arg(None, **schema) == {"size": "base", "pairs": 8, "rate": 0.5, "fast": False}
    parsed = parse_arg("pairs=16,fast=True,rate=1e-3", **schema)
    assert parsed == {"size": "base", "pairs": 16, "rate": 1e-3, "fast": True}
    assert parse_arg(pack_arg(parsed), **schema) == parsed


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("depth=3", "config argument 'depth=3' is not valid; use key=value with keys: fast, pairs"),
        ("pairs", "config argument 'pairs' is not valid; use key=value with keys: fast, pairs"),
        ("pairs=x", "config argument pairs='x' is not valid; it must be an integer"),
        ("fast=maybe", "config argument fast='maybe' is not valid; it must be True or False"),
    ],
)
def test_bad_items_are_one_line_errors(arg, message):
    with pytest.raises(UserError) as error:
        parse_arg(arg, pairs=(8, int), fast=False)
    assert str(error.value) == message


def test_an_item_without_a_value_in_a_spec_is_an_error():
    with pytest.raises(UserError, match="'size' is not valid; use key=value$"):
        parse_spec("configs/recall.py:size")
