"""The one exception type for mistakes a user can fix: bad configs, missing or malformed data.

`research.main` prints these as a single line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(ValueError):
    """A one-line message naming the field or file at fault and what would be valid."""


def check_choice(field: str, value: object, choices) -> None:
    """Raises UserError unless `value` is one of `choices`; `field` is the config path shown."""
    if value not in choices:
        valid = ", ".join(str(c) for c in choices)
        raise UserError(f"{field}={value!r} is not valid; choose one of: {valid}")


def check_positive(field: str, value: object, *, allow_zero: bool = False) -> None:
    """Raises UserError unless `value` is an int greater than zero (or equal, with allow_zero)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"{field}={value!r} is not valid; it must be an integer {bound}")


def unreadable_config(path: str) -> str:
    """The line for a `--config` file that cannot be read."""
    return f"--config: cannot read {path!r}; give a file such as configs/listops.py[:args]"


def config_flag_error(error: Exception, argv: list[str]) -> str:
    """The line for a config that ml_collections' config_flags could not build from `argv`
    (`--config FILE[:args]` and `--config.<field>=value` overrides): a field the config lacks (named
    by the override that set it), a mistake get_config() raised as UserError (config_flags wraps
    it in a traceback), or a value the field refuses (config_flags' own first line)."""
    if isinstance(error, AttributeError | KeyError):
        field = str(error).strip("'\"")
        overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        culprit = next((o for o in overrides if o.split(".")[-1] == field), f"--config...{field}")
        return f"{culprit}: the config has no field {field!r}; see the config file for the fields"
    cause = error.__cause__ or error.__context__
    if isinstance(cause, UserError):
        return str(cause).strip().splitlines()[-1].removeprefix("research.errors.UserError: ")
    return str(error).splitlines()[0]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step."""
