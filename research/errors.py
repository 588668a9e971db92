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


def check_known(field: str, given, known, *, kind: str = "field") -> None:
    """Raises UserError naming every key of `given` that is not in `known`: the one unknown-key
    rule for config sections (`field` is the section's path, `kind` what its keys are called)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = sorted(known) or "none"
        raise UserError(f"{field} has unknown {kind}(s) {unknown}; valid: {valid}")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step."""
