"""Command-line entry point: `python -m research.cli.main --config FILE[:ARGS] --workdir DIR`.

Thin on purpose: it parses flags and calls `research.training.train.train_and_evaluate`.
Mistakes a user can fix (research.errors.UserError) are printed as one line and exit with status
2; a non-finite loss exits with 1; a run stopped by SIGTERM/SIGINT exits with 75 after saving a
checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from research.cli.config_cli import parse_config_flags
from research.errors import EXIT_FAILED, EXIT_PREEMPTED, NonFiniteLossError, UserError, fail

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with arguments: configs/listops.py:size=tiny,attention=full. "
    "Override single fields with --config.model.num_layers=2.",
    lock_config=True,
)
flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, TensorBoard files and results."
)
flags.DEFINE_bool(
    "reevaluate",
    False,
    "Score a finished run's parameters again (otherwise a workdir that holds the finished run of "
    "this config is left as it is and its results are printed).",
)
flags.DEFINE_bool(
    "distributed",
    False,
    "Start jax.distributed (one process per host). On TPU pods and under SLURM the other "
    "settings are detected; elsewhere give the three flags below.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, with --distributed.")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --distributed.")
flags.DEFINE_integer("process_id", None, "This process's index, with --distributed.")
# Checked after parsing (parse_flags), so that a missing one is named with what to give.
REQUIRED = {
    "config": "a config file, e.g. --config configs/listops.py:size=tiny (configs/ has one per "
    "task)",
    "workdir": "the run's folder for checkpoints, metrics and results, e.g. --workdir runs/x",
}


def parse_flags(argv: list[str]) -> list[str]:
    """FLAGS(argv), with every mistake in the config, its overrides or the arguments reported as
    one line instead of a traceback or a usage dump."""
    try:
        rest = parse_config_flags(FLAGS, argv)
    except UserError as error:
        fail(str(error))
    if len(rest) > 1:
        fail(stray_argument(rest[1]))
    for name, what in REQUIRED.items():
        if FLAGS[name].value is None:
            fail(f"--{name} is required: {what}")
    return rest


def stray_argument(arg: str) -> str:
    """The line for a positional argument: this program takes flags only."""
    if "=" in arg and not arg.startswith("-"):
        return (
            f"unexpected argument {arg!r}; config arguments go after the file, as in "
            f"--config configs/listops.py:{arg}"
        )
    return f"unexpected argument {arg!r}; every argument is a flag (--config, --workdir, ...)"


def start_distributed() -> None:
    """jax.distributed.initialize; gloo makes collectives work between CPU-only processes too
    (it affects CPU computations only, so it is harmless on GPU and TPU hosts)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


def main(argv: list[str]) -> None:
    if not FLAGS["verbosity"].present:  # orbax and tfds INFO logs would bury the progress bar
        logging.set_verbosity(logging.WARNING)
    if FLAGS.distributed:
        start_distributed()
    from research.training.train import train_and_evaluate

    try:
        results = train_and_evaluate(FLAGS.config, FLAGS.workdir, reevaluate=FLAGS.reevaluate)
    except UserError as error:
        fail(str(error))
    except NonFiniteLossError as error:
        fail(str(error), EXIT_FAILED)
    if results.get("preempted"):
        raise SystemExit(EXIT_PREEMPTED)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
