"""An experiment file's grid as named cells: loading the file, naming each cell after its values
on the sweep's axes, `--only` / `--shard` selection, and the TPU command of a cell.

Pure: nothing here runs or writes anything, so `--dry-run` and the tests need no JAX.
"""

import dataclasses
import importlib.util
import os
import re
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from research.cli.config_spec import pack_spec, parse_spec, split_spec
from research.errors import UserError
from research.sweeps import hyper
from research.sweeps.axes import grid_keys, independent_keys, short_names, varying_keys
from research.sweeps.cells import Cell

TPU_FIELDS = ("name", "zone", "accelerator", "project", "version")
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=:+-]")


@dataclasses.dataclass
class Experiment:
    path: str
    config: str
    grid: hyper.Grid
    tpu: dict[str, str] | None
    #: BEST_OVER: the swept axis whose best value (by validation) the report keeps, or None
    best_over: str | None = None


# ----------------------------------------------------------------------------- experiment files


def load_experiment(path: str) -> Experiment:
    """Imports an experiment file by path (experiments/ is not a package) and builds its grid."""
    if not os.path.isfile(path):
        raise UserError(f"experiment file {path!r} does not exist; give e.g. experiments/X.py")
    spec = importlib.util.spec_from_file_location(f"experiment_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{path} failed to load: {type(error).__name__}: {error}") from error
    config = getattr(module, "CONFIG", None)
    if not isinstance(config, str) or not config:
        raise UserError(f'{path} needs CONFIG = "configs/FILE.py[:args]", the base config spec')
    if not callable(getattr(module, "get_hyper", None)):
        raise UserError(f"{path} has no get_hyper(h); define it to return h.product([...])")
    best_over = getattr(module, "BEST_OVER", None)
    if best_over is not None and not isinstance(best_over, str):
        raise UserError(f"{path}: BEST_OVER={best_over!r} must be a swept axis's name (a string)")
    grid = build_grid(path, module)
    return Experiment(path, config, grid, tpu_options(path, module), best_over)


def build_grid(path: str, module: ModuleType) -> hyper.Grid:
    """`get_hyper(hyper)`, checked: a list of dicts with valid keys."""
    try:
        grid = module.get_hyper(hyper)
    except UserError:
        raise
    except Exception as error:  # a bug in the experiment file: say where, in one line
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
        where = f" (line {frames[-1].lineno})" if frames else ""
        message = f"{type(error).__name__}: {error}"
        raise UserError(f"{path}: get_hyper failed{where}: {message}") from error
    if not isinstance(grid, list) or not grid or not all(isinstance(c, dict) for c in grid):
        raise UserError(f"{path}: get_hyper must return a non-empty list of dicts, got {grid!r}")
    for cell in grid:
        for key in cell:
            hyper.check_key(key)
    return grid


def tpu_options(path: str, module: ModuleType) -> dict[str, str] | None:
    tpu = getattr(module, "TPU", None)
    if tpu is None:
        return None
    if not isinstance(tpu, dict) or not set(tpu) <= set(TPU_FIELDS) or "accelerator" not in tpu:
        raise UserError(
            f"{path}: TPU must be a dict with 'accelerator' and optionally "
            f"{', '.join(f for f in TPU_FIELDS if f != 'accelerator')}; got {tpu!r}"
        )
    return {key: str(value) for key, value in tpu.items()}


# ----------------------------------------------------------------------------- cells


def display_value(key: str, value: Any) -> str:
    """A value as cell names show it: a config file spec shortens to its stem and arguments."""
    if key == "config" and isinstance(value, str):
        path, arg = split_spec(value)
        return Path(path).stem + (f":{arg}" if arg else "")
    return str(value)


def cell_name(values: dict[str, Any], axes: list[str], shorts: dict[str, str]) -> str:
    items = [f"{shorts[k]}={display_value(k, values[k])}" for k in axes if k in values]
    return _UNSAFE.sub("_", ",".join(items))


def cell_spec(base: str, values: dict[str, Any]) -> str:
    """The config spec of a cell: `config` replaces the base spec, `arg.*` keys are merged into
    its argument string (replacing an argument of the same name, in place)."""
    spec = str(values.get("config", base))
    args = {k.removeprefix("arg."): str(v) for k, v in values.items() if k.startswith("arg.")}
    if not args:
        return spec
    path, current = parse_spec(spec)
    return pack_spec(path, {**current, **args})


def make_cells(experiment: Experiment, workdir: str) -> list[Cell]:
    """The grid's cells, named after their values on the axes; names must be distinct."""
    grid = experiment.grid
    # Keys the earlier ones determine (LRA's data path per task) stay out of the names.
    axes = independent_keys(varying_keys(grid), grid)
    shorts = short_names(axes)
    named = [cell_name(values, axes, shorts) for values in grid]
    if len(set(named)) < len(grid) or not all(named):  # keys missing from some cells
        axes = varying_keys(grid)
        shorts = short_names(axes)
    cells, seen = [], {}
    for index, values in enumerate(grid):
        name = cell_name(values, axes, shorts) if len(grid) > 1 else "base"
        if name in seen or not name:
            raise UserError(
                f"cells {seen.get(name, index)} and {index} of the grid are both named {name!r}; "
                "every cell needs distinct values (remove the duplicate)"
            )
        seen[name] = index
        overrides = {k: v for k, v in values.items() if k.startswith("config.")}
        spec = cell_spec(experiment.config, values)
        cells.append(Cell(name, os.path.join(workdir, name), spec, overrides, index, values))
    return cells


# ----------------------------------------------------------------------------- selection


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if sep and index.isdigit() and count.isdigit() and int(index) < int(count):
        return int(index), int(count)
    raise UserError(f"--shard {text!r} is not valid; give I/N with 0 <= I < N, e.g. --shard 0/4")


def only_key(key: str, keys: list[str]) -> str:
    """The grid key that `--only KEY` names: the full key or a dotted suffix of exactly one."""
    if key in keys:
        return key
    matches = [k for k in keys if k.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    shorts = short_names(keys)
    listed = ", ".join(shorts[k] for k in keys)
    what = f"matches several keys ({', '.join(matches)})" if matches else "is not a key of the grid"
    raise UserError(f"--only {key}: {what}; the keys are: {listed}")


def select(cells: list[Cell], only: list[str], shard: str | None) -> list[Cell]:
    """The cells this invocation runs: `--shard` on grid positions, then `--only` filters (one key
    given twice keeps either value; different keys must all match)."""
    keys = grid_keys([cell.values for cell in cells])
    if shard is not None:
        index, count = parse_shard(shard)
        cells = [cell for cell in cells if cell.index % count == index]
    wanted: dict[str, set[str]] = {}
    for item in only:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--only {item!r} is not valid; give KEY=VALUE, e.g. attention=local")
        wanted.setdefault(only_key(key, keys), set()).add(value)

    def keep(cell: Cell) -> bool:
        for key, values in wanted.items():
            value = cell.values.get(key)
            if key not in cell.values or not values & {str(value), display_value(key, value)}:
                return False
        return True

    kept = [cell for cell in cells if keep(cell)]
    if only and not kept and cells:
        raise UserError(f"--only {' '.join(only)} matches no cell of the grid")
    return kept


# ----------------------------------------------------------------------------- commands


def tpu_command(cell: Cell, tpu: dict[str, str]) -> list[str]:
    command = ["./launch.sh", "tpu"]
    for field in TPU_FIELDS:
        if field in tpu or field in ("name", "zone"):
            command += [f"--{field}", tpu.get(field, field.upper())]
    return [*command, "--", *cell.flags()]
