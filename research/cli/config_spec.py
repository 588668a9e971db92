"""The config spec string `FILE[:key=value,key=value]`: the one parser and packer.

`--config configs/recall.py:pairs=16,size=tiny` names a config file and the one string argument
its `get_config(arg)` receives. Everything that reads or writes such a string goes through here:
the command line (`research.cli.config_cli`), the config files (`configs/base.py`), the sweep grid
(which merges `arg.*` keys into a spec) and the sweep report (which reads a cell's task and
arguments from its spec). The model is big_vision's `parse_arg` / `pack_arg`:

    parse_arg("pairs=16", size=("base", str), pairs=(8, int))  ->  {"size": "base", "pairs": 16}
    pack_arg({"size": "base", "pairs": 16})                    ->  "size=base,pairs=16"
"""

from collections.abc import Mapping
from typing import Any

from research.errors import UserError

PATH_END = ":"  # between the file and its argument
ITEM_END = ","  # between two key=value items
BOOLEANS = {"true": True, "false": False}


def split_spec(spec: str) -> tuple[str, str]:
    """ "configs/recall.py:pairs=16" -> ("configs/recall.py", "pairs=16"); "" with no argument."""
    path, _, arg = spec.partition(PATH_END)
    return path, arg


def pack_spec(path: str, args: Mapping[str, Any]) -> str:
    """The spec of config file `path` with the arguments `args` (the file alone without any)."""
    return f"{path}{PATH_END}{pack_arg(args)}" if args else path


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """(file, {key: value as given}) of a spec; an item without `=` is a one-line UserError."""
    path, arg = split_spec(spec)
    return path, parse_items(arg)


def parse_items(arg: str | None, keys: list[str] | None = None) -> dict[str, str]:
    """The key=value items of an argument string, in order, values as strings. With `keys`, a key
    outside them is refused too; the error lists the valid keys."""
    items = {}
    for item in filter(None, (arg or "").split(ITEM_END)):
        key, sep, value = item.partition("=")
        if not sep or not key or (keys is not None and key not in keys):
            valid = f" with keys: {', '.join(sorted(keys))}" if keys is not None else ""
            raise UserError(f"config argument {item!r} is not valid; use key=value{valid}")
        items[key] = value
    return items


def pack_arg(args: Mapping[str, Any]) -> str:
    """{"size": "base", "pairs": 16} -> "size=base,pairs=16" (values as `str` writes them)."""
    return ITEM_END.join(f"{key}={value}" for key, value in args.items())


def parse_arg(arg: str | None, **schema: Any) -> dict[str, Any]:
    """A config file's argument string as typed values: each keyword of `schema` is a valid key,
    given as `(default, type)` or as a default whose type is the value's type. An unknown key, a
    malformed item or a value that is not of its type is a one-line UserError naming it."""
    specs = {key: s if isinstance(s, tuple) else (s, type(s)) for key, s in schema.items()}
    values = {key: default for key, (default, _) in specs.items()}
    for key, text in parse_items(arg, list(specs)).items():
        values[key] = convert(key, text, specs[key][1])
    return values


def convert(key: str, text: str, kind: type) -> Any:
    """`text` as a `kind` (str, int, float or bool: True/False); UserError naming the argument."""
    if kind is str:
        return text
    if kind is bool:
        if text.lower() in BOOLEANS:
            return BOOLEANS[text.lower()]
        raise UserError(f"config argument {key}={text!r} is not valid; it must be True or False")
    try:
        return kind(text)
    except ValueError:
        name = {int: "an integer", float: "a number"}.get(kind, f"a {kind.__name__}")
        raise UserError(f"config argument {key}={text!r} is not valid; it must be {name}") from None
