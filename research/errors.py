"""The one exception type for mistakes a user can fix (bad configs, missing or malformed data), and
how every command line reports them: one `error: ...` line on stderr and an exit status.

Every CLI (`research.cli.main`, the sweep runner, its report, the attention maps, the bench)
prints a UserError with `print_error` and exits with EXIT_USAGE; anything else is a bug and
keeps its traceback. The sweep reads a failed cell's error back from its log with `error_message`.
"""

import sys
from typing import NoReturn

EXIT_FAILED = 1  # the run failed (a non-finite loss; a sweep with a failed cell)
EXIT_USAGE = 2  # a mistake the user can fix; nothing was run
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; run again
ERROR_PREFIX = "error:"


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


def print_error(message: object) -> None:
    """Prints `error: <message>` on stderr: the one form of every CLI's error line."""
    print(f"{ERROR_PREFIX} {message}", file=sys.stderr)


def fail(message: object, status: int = EXIT_USAGE) -> NoReturn:
    """Prints the error line and exits with `status` (EXIT_USAGE: nothing was run)."""
    print_error(message)
    sys.exit(status)


def error_message(line: str) -> str | None:
    """The message of an error line `print_error` wrote, or None for any other line."""
    if line.startswith(ERROR_PREFIX):
        return line.removeprefix(ERROR_PREFIX).strip()
    return None


def describe(error: BaseException, limit: int | None = None) -> str:
    """`Type: first line of the message`, for a one-line error about an exception that is not
    ours; cut to `limit` characters when given (TensorStore's first lines can be long)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step."""
