"""A sweep's axes and their short names: the one rule for which keys a set of cells varies over
and what they are called, shared by cell names (research/sweeps/grid.py), `--only`, and the
report's rows, columns and headings (research/sweeps/report/).

A cell here is a dict of keys to values: a grid cell's `config.*` / `arg.*` / `config` keys, or a
run's flattened config.json with `config.` prefixed.
"""

import json
from collections.abc import Sequence
from typing import Any


def grid_keys(cells: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of the cells, in order of first appearance."""
    return list(dict.fromkeys(key for cell in cells for key in cell))


def varying_keys(cells: Sequence[dict[str, Any]]) -> list[str]:
    """The keys whose value differs between cells (or is missing in some), in order of first
    appearance."""
    missing = object()
    return [k for k in grid_keys(cells) if len({repr(c.get(k, missing)) for c in cells}) > 1]


def independent_keys(keys: Sequence[str], cells: Sequence[dict[str, Any]]) -> list[str]:
    """The keys that vary across `cells` and are not determined by the keys kept before them (a
    cell missing a key counts as None there); keys are tried in order, so put first the ones to
    keep. An LRA grid's data path changes with its task: as a key of its own it would only
    relabel the task, in cell names and report columns.
    """
    kept: list[str] = []
    for key in keys:
        seen: dict[str, str] = {}
        for cell in cells:
            before = json.dumps([cell.get(k) for k in kept], default=str)
            value = json.dumps(cell.get(key), default=str)
            if seen.setdefault(before, value) != value:
                kept.append(key)
                break
    return kept


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """key -> its shortest dotted suffix that no other key ends with (`attention`, or
    `model.attention` beside `arg.attention`); the full key when no suffix is unique."""
    names = {}
    for key in keys:
        parts = key.split(".")
        others = [k for k in keys if k != key]
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(k == suffix or k.endswith("." + suffix) for k in others):
                names[key] = suffix
                break
        else:
            names[key] = key
    return names
