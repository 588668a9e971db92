"""`--config FILE[:ARGS]` and `--config.<field>=VALUE` into a ConfigDict, every mistake one line.

ml_collections' config_flags builds the config; its own errors are written for developers (an
override of a missing field is a KeyError whose text holds escaped quotes, a bad boolean a raw
tuple, and an exception raised while the file loads can surface as a "missing field"). So the file
is loaded and the overrides' field paths are checked here first, each failure becoming a UserError
that names the flag; config_flags then only parses values, whose errors are reworded the same way.
Used by `research.cli.main` and by the sweep, which checks each cell's config before any runs.
"""

import difflib
import importlib.util
import os
import re

from absl import flags
from ml_collections import ConfigDict

from research.cli.config_spec import split_spec
from research.errors import UserError, describe


def config_spec(argv: list[str]) -> str | None:
    """The value of --config in `argv` (`--config X` or `--config=X`), or None."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.removeprefix("--config=")
    return None


def load_config_file(spec: str) -> ConfigDict:
    """Runs `get_config(ARGS)` of FILE for `spec` = FILE[:ARGS]; UserError if that fails."""
    path, args = split_spec(spec)
    if not os.path.isfile(path):
        raise UserError(
            f"--config: cannot read {path!r}; give a file such as configs/listops.py[:args]"
        )
    try:
        module_spec = importlib.util.spec_from_file_location("research_config_file", path)
        if module_spec is None:
            raise FileNotFoundError(path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as error:  # anything the file or what it imports raised
        raise UserError(f"--config {spec} could not be loaded: {describe(error)}") from None
    if not hasattr(module, "get_config"):
        raise UserError(f"--config {path} defines no get_config(); see configs/listops.py")
    try:
        config = module.get_config(args) if args else module.get_config()
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"--config {spec}: get_config raised {describe(error)}") from None
    if not isinstance(config, ConfigDict):
        raise UserError(
            f"--config {spec}: get_config returned {type(config).__name__}, not a ConfigDict"
        )
    return config


def override_paths(argv: list[str]) -> list[str]:
    """The field path of every `--config.<path>=<value>` (or `--config.<path> <value>`)."""
    return [
        arg.removeprefix("--config.").partition("=")[0]
        for arg in argv
        if arg.startswith("--config.")
    ]


def check_fields(config: ConfigDict, argv: list[str]) -> None:
    """UserError for the first override naming a field the config does not have, with the
    closest existing names as a suggestion."""
    for path in override_paths(argv):
        node, walked = config, []
        for name in path.split("."):
            if "[" in name:
                break  # an index into a sequence: config_flags decides
            if not isinstance(node, ConfigDict):
                flag = ".".join(["--config", *walked])
                raise UserError(f"{flag} is a value, not a group of fields; it has no {name!r}")
            if name not in node:
                flag = ".".join(["--config", *walked, name])
                close = difflib.get_close_matches(name, list(node.keys()), n=3)
                hint = (
                    f"did you mean {' or '.join(close)}?"
                    if close
                    else "see the config file for the fields"
                )
                raise UserError(f"{flag}: the config has no field {name!r}; {hint}")
            node, walked = node[name], [*walked, name]


EXPECTED = {bool: "True or False", int: "an integer", float: "a number"}


def field_value(config: ConfigDict, path: str):
    node = config
    for name in path.split("."):
        node = node[name]
    return node


def bad_value(error: flags.Error, config: ConfigDict | None) -> str:
    """The line for a value config_flags could not parse as its field's type."""
    message = str(error).splitlines()[0]
    match = re.match(r"flag --config\.([\w.]+)=(.*?): (.*)$", message)
    if not match:
        return message
    path, value, reason = match.groups()
    try:
        expected = EXPECTED.get(type(field_value(config, path)))
    except (KeyError, AttributeError, TypeError):
        expected = None
    return f"--config.{path}={value!r} is not valid; " + (
        f"it must be {expected}" if expected else reason
    )


def parse_config_flags(values: flags.FlagValues, argv: list[str]) -> list[str]:
    """values(argv) with a config flag defined in `values`; returns the arguments left over (the
    program name first). Every mistake in the config or its overrides is a one-line UserError."""
    spec = config_spec(argv)
    config = load_config_file(spec) if spec else None
    if config is not None:
        check_fields(config, argv)
    try:
        return values(argv)
    except flags.IllegalFlagValueError as error:
        raise UserError(bad_value(error, config)) from None
    except flags.Error as error:
        raise UserError(str(error).splitlines()[0]) from None
