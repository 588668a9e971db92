"""Config mistakes on the command line are one line naming the flag: a near-miss field name (with
the suggestion), a value of the wrong type, a config file that fails to load (saying what failed),
a stray positional argument. In process through `parse_config_flags`, plus the real CLI."""

import pytest
from absl import flags
from ml_collections import config_flags

from research.cli.config_cli import parse_config_flags
from research.errors import UserError
from tests.training.test_train import run_cli

TINY = ["--config", "configs/listops.py:size=tiny"]


def parse(*args: str):
    argv = ["prog", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=values, lock_config=True, sys_argv=argv
    )
    parse_config_flags(values, argv)
    return values.config


def write_config(tmp_path, body: str) -> str:
    path = tmp_path / "my_config.py"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [*TINY, "--config.model.num_layer=2"],
            "--config.model.num_layer: the config has no field 'num_layer'; did you mean "
            "num_layers or num_classes?",
        ),
        (
            [*TINY, "--config.model.attention_options.local.windw=3"],
            "--config.model.attention_options.local.windw: the config has no field 'windw'; "
            "did you mean window?",
        ),
        (
            [*TINY, "--config.zzz", "1"],
            "--config.zzz: the config has no field 'zzz'; see the config file for the fields",
        ),
        (
            [*TINY, "--config.fsdp=maybe"],
            "--config.fsdp='maybe' is not valid; it must be True or False",
        ),
        (
            [*TINY, "--config.num_train_steps=abc"],
            "--config.num_train_steps='abc' is not valid; it must be an integer",
        ),
        (
            [*TINY, "--config.optimizer.learning_rate=fast"],
            "--config.optimizer.learning_rate='fast' is not valid; it must be a number",
        ),
        (
            [*TINY, "--config.model.num_layers.depth=1"],
            "--config.model.num_layers is a value, not a group of fields; it has no 'depth'",
        ),
        (["--config", "configs/missing.py"], "--config: cannot read 'configs/missing.py'"),
        (["--config", "configs/listops.py:size=huge"], "config argument size='huge' is not valid"),
    ],
)
def test_mistakes_are_one_line_naming_the_flag(argv, message):
    with pytest.raises(UserError) as error:
        parse(*argv)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "def get_config():\n    from research import does_not_exist\n",
            "get_config raised ImportError: cannot import name 'does_not_exist' from 'research'",
        ),
        (
            "import research.nope\n",
            "could not be loaded: ModuleNotFoundError: No module named 'research.nope'",
        ),
        ("def get_config(\n", "could not be loaded: SyntaxError: '(' was never closed"),
        ("X = 1\n", "defines no get_config()"),
        ("def get_config():\n    pass\n", "get_config returned NoneType, not a ConfigDict"),
        (
            "open('/no/such/data.txt')\n",
            "could not be loaded: FileNotFoundError: [Errno 2] No such file or directory",
        ),
        (
            "def get_config():\n    return {}['missing']\n",
            "get_config raised KeyError: 'missing'",
        ),
    ],
)
def test_a_config_file_that_fails_to_load_says_what_failed(tmp_path, body, message):
    with pytest.raises(UserError, match="^--config ") as error:
        parse("--config", write_config(tmp_path, body))
    assert message in str(error.value) and "no field" not in str(error.value)


def test_overrides_still_set_their_fields():
    config = parse(*TINY, "--config.model.num_layers=3", "--config.fsdp=True")
    assert config.model.num_layers == 3 and config.fsdp is True


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config", "configs/listops.py", "size=tiny"],
            "error: unexpected argument 'size=tiny'; config arguments go after the file, as in "
            "--config configs/listops.py:size=tiny",
        ),
        ([*TINY, "--config.fsdp=maybe"], "error: --config.fsdp='maybe' is not valid"),
    ],
)
def test_the_command_line_prints_one_line_and_exits_2(tmp_path, args, message):
    result = run_cli(*args, "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message), result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "runs/x"], "error: --config is required: a config file, e.g. --config "),
        (["--config", "configs/listops.py"], "error: --workdir is required: the run's folder"),
        (["size=tiny"], "error: unexpected argument 'size=tiny'; config arguments go after"),
    ],
)
def test_a_missing_flag_is_one_line_saying_what_to_give(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message), result.stderr
