"""LRA's sweep grammar: an experiment file's `get_hyper(h)` builds its grid with this module as `h`.

A grid is a list of dicts, one per cell, each mapping a key to the value that cell uses:

    h.product([h.sweep("config.model.attention", ["full", "local"]),
               h.sweep("config.seed", [0, 1])])

gives four cells, the first factor varying slowest. `zip` pairs factors element-wise, `chainit`
concatenates them, and all of them nest. Keys take three forms:

- `config.<dotted.field>`: a `--config.<field>=value` override of the config;
- `arg.<name>`: a config-file string argument, merged into the spec (`configs/recall.py:pairs=16`);
- `config`: the config file spec itself (`configs/text.py` or `configs/text.py:size=tiny`).
"""

import builtins
import itertools
import re
from collections.abc import Sequence
from typing import Any

from research.errors import UserError

Grid = list[dict[str, Any]]
KEY_FORMS = '"config.<dotted.field>", "arg.<name>" or "config"'
_FIELD = r"[A-Za-z_][A-Za-z0-9_]*"
_KEY = re.compile(rf"config|config\.{_FIELD}(\.{_FIELD})*|arg\.{_FIELD}")


def check_key(key: object) -> str:
    """Returns `key` if it is one of the three forms; a one-line error naming it otherwise."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise UserError(f"sweep key {key!r} is not valid; use {KEY_FORMS}")
    return key


def sweep(key: str, values: Sequence[Any]) -> Grid:
    """One cell per value of `key`, in order."""
    check_key(key)
    if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence):
        raise UserError(f"sweep({key!r}, ...) needs a list of values, got {values!r}")
    if not values:
        raise UserError(f"sweep({key!r}, []) has no values; a sweep needs at least one")
    return [{key: value} for value in values]


def fixed(key: str, value: Any) -> Grid:
    """A single cell setting `key`: a factor of `product` that every cell shares."""
    return sweep(key, [value])


def merge(dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One cell from several factors' cells; a key set by two factors is ambiguous, so an error."""
    merged: dict[str, Any] = {}
    for part in dicts:
        for key, value in part.items():
            if key in merged:
                raise UserError(
                    f"sweep key {key!r} is given twice in one cell ({merged[key]!r} and "
                    f"{value!r}); each key may appear in one factor of a product or zip only"
                )
            merged[key] = value
    return merged


def product(factors: Sequence[Grid]) -> Grid:
    """The cartesian product of the factors, merged; the first factor varies slowest."""
    return [merge(cells) for cells in itertools.product(*_grids("product", factors))]


def zip(factors: Sequence[Grid]) -> Grid:
    """Element-wise merge of factors of equal length (LRA's name; shadows the builtin here only)."""
    grids = _grids("zip", factors)
    lengths = [len(grid) for grid in grids]
    if len(set(lengths)) > 1:
        raise UserError(f"zip needs factors of equal length, got lengths {lengths}")
    return [merge(cells) for cells in builtins.zip(*grids, strict=True)]


def chainit(factors: Sequence[Grid]) -> Grid:
    """The factors' cells one after the other (e.g. two sub-grids over different keys)."""
    return [cell for grid in _grids("chainit", factors) for cell in grid]


def _grids(operation: str, factors: Sequence[Grid]) -> list[Grid]:
    """Checks that `factors` is a list of grids: a common slip is passing grids as separate
    arguments instead of one list, which would otherwise fail far from the cause."""
    if isinstance(factors, dict) or not isinstance(factors, Sequence):
        raise UserError(f"{operation} takes one list of grids, e.g. {operation}([a, b])")
    grids = list(factors)
    for grid in grids:
        if not isinstance(grid, list) or not all(isinstance(cell, dict) for cell in grid):
            raise UserError(
                f"{operation} takes a list of grids (lists of dicts, as sweep() returns), "
                f"got {grid!r}"
            )
    return grids
