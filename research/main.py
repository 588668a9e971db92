"""Command-line entry point: `python -m research.main --config FILE[:ARGS] --workdir DIR`.

Thin on purpose: it parses flags and calls `research.train.train_and_evaluate`. Mistakes a user can
fix (research.errors.UserError) are printed as one line and exit with status 2.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from research.errors import NonFiniteLossError, UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with arguments: configs/listops.py:size=tiny,attention=full. "
    "Override single fields with --config.model.num_layers=2.",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Directory for metrics, TensorBoard files and results.")
flags.mark_flags_as_required(["config", "workdir"])


def fail(message: str) -> None:
    """Prints a one-line error and exits with status 2 (a usage error, nothing was run)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """FLAGS(argv), with config mistakes reported as one line instead of a traceback."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as error:
        field = str(error).strip("'\"")
        overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        culprit = next((o for o in overrides if o.split(".")[-1] == field), f"--config...{field}")
        fail(f"{culprit}: the config has no field {field!r}; see the config file for the fields")
    except flags.Error as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, UserError):  # raised by get_config(); config_flags adds a traceback
            fail(str(cause).strip().splitlines()[-1].removeprefix("research.errors.UserError: "))
        fail(str(error).splitlines()[0])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from research.train import train_and_evaluate

    try:
        config = FLAGS.config
        config.task  # a config file that failed to load raises here  # noqa: B018
    except OSError:
        path = FLAGS["config"].config_filename
        fail(f"--config: cannot read {path!r}; give a file such as configs/listops.py[:args]")
    try:
        train_and_evaluate(config, FLAGS.workdir)
    except UserError as error:
        fail(str(error))
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
