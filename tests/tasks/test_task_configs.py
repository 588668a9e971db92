"""Every task's tiny config trains end to end (on generated data or on fixtures in the real file
formats), the configs mirror LRA's released settings, and the train command runs a new task."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from cifar_fixture import write_cifar

from configs import base, distance, image, listops, pathfinder, recall, retrieval, text
from research import tasks
from research.attention import ATTENTION
from research.errors import UserError
from research.training.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def shrink(config, data_dir, *, batch_size=8, steps=4):
    """A few steps on a handful of examples: enough to run every stage of the loop."""
    config.data_dir = str(data_dir)
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
    config.num_train_steps = steps
    config.log_every_steps = 2
    config.eval_every_steps = steps
    return config


def tiny_config(task: str, tmp_path, attention: str = "full"):
    """The task's tiny config pointed at small data: generated, or a fixture in the real format."""
    arg = f"size=tiny,attention={attention}"
    if task == "text":
        config = text.get_config(arg)
        config.task_options.source = os.path.join(FIXTURES, "text")
        config.model.max_len = 48  # reviews are cut to it (config.truncate, as in LRA)
    elif task == "retrieval":
        config = retrieval.get_config(arg)
        config.task_options.release_dir = os.path.join(FIXTURES, "retrieval")
        config.model.max_len = 32
        return shrink(config, tmp_path / "tfds", batch_size=4)
    elif task == "image":
        config = image.get_config(arg)
        config.task_options.source, _ = write_cifar(tmp_path / "cifar")
    elif task == "pathfinder":
        config = pathfinder.get_config(arg)
        config.task_options.update(num_train=16, num_val=8, num_test=8)
    elif task == "pathfinder_release":
        config = pathfinder.get_config(arg)
        config.task_options.release_dir = os.path.join(FIXTURES, "pathfinder")
    elif task == "recall":
        config = recall.get_config(arg)
        config.task_options.update(num_train=32, num_val=8, num_test=8)
    else:
        config = distance.get_config(arg)
        config.task_options.update(num_train=32, num_val=8, num_test=8)
    return shrink(config, tmp_path / "tfds")


@pytest.mark.slow
@pytest.mark.parametrize(
    "task",
    ["text", "retrieval", "image", "pathfinder", "pathfinder_release", "recall"],
)
def test_tiny_config_trains_end_to_end(task, tmp_path):
    results = train_and_evaluate(tiny_config(task, tmp_path), str(tmp_path / "run"))
    assert results["num_train_steps"] == 4
    assert np.isfinite(results["test_loss"]) and 0.0 <= results["test_accuracy"] <= 1.0
    assert results["test_examples"] > 0


@pytest.mark.slow
def test_a_recall_mix_trains_and_scores_each_segment_on_its_own(tmp_path):
    """configs/recall.py:mix=...: one run over two (length, pairs); results.json has each
    segment's test accuracy, and the test accuracy is their mean weighted by queries."""
    config = recall.get_config("size=tiny,mix=32x4-64x8")
    assert config.model.max_len == 64
    config.task_options.update(num_train=32, num_val=8, num_test=8)
    results = train_and_evaluate(shrink(config, tmp_path / "tfds"), str(tmp_path / "run"))
    by_split = results["test_accuracy_by_split"]
    assert list(by_split) == ["test_32x4", "test_64x8"]
    assert results["test_examples"] == 4 * 4 + 4 * 8  # the queries of 4 + 4 test examples
    weighted = (by_split["test_32x4"] * 16 + by_split["test_64x8"] * 32) / 48
    assert results["test_accuracy"] == pytest.approx(weighted, abs=1e-6)
    with open(tmp_path / "run" / "metrics.jsonl") as lines:
        splits = {json.loads(line)["split"] for line in lines}
    assert {"test", "test_32x4", "test_64x8"} <= splits


@pytest.mark.slow
@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_distance_config_trains_with_every_attention_variant(attention, tmp_path):
    results = train_and_evaluate(
        tiny_config("distance", tmp_path, attention), str(tmp_path / "run")
    )
    assert np.isfinite(results["test_loss"])


@pytest.mark.slow
def test_train_command_runs_the_two_tower_retrieval_config(tmp_path):
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "research.cli.main",
        "--config", "configs/retrieval.py:size=tiny",
        "--workdir", str(workdir),
        f"--config.task_options.release_dir={os.path.join(FIXTURES, 'retrieval')}",
        f"--config.data_dir={tmp_path / 'tfds'}",
        "--config.model.max_len=32",
        "--config.batch_size=4", "--config.eval_batch_size=4",
        "--config.num_train_steps=2", "--config.eval_every_steps=2", "--config.log_every_steps=1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(workdir / "results.json") as file:
        assert json.load(file)["test_examples"] == 4


def test_missing_user_files_fail_with_the_expected_path_and_format(tmp_path):
    for task, field, message in [
        ("text", "source", "aclImdb_v1.tar.gz or its extracted aclImdb/ folder"),
        ("retrieval", "release_dir", r"new_aan_pairs\.train\.tsv"),
        ("image", "source", r"cifar-10-python\.tar\.gz or its extracted cifar-10-batches-py/"),
    ]:
        config = tiny_config(task, tmp_path)
        config.task_options[field] = str(tmp_path / "missing")
        with pytest.raises(UserError, match=message):
            train_and_evaluate(config, str(tmp_path / "run"))
        assert not (tmp_path / "run").exists()


def test_configs_mirror_lra():
    config = text.get_config()
    assert (config.model.max_len, config.model.emb_dim, config.model.num_heads) == (1000, 256, 4)
    assert (config.model.num_layers, config.model.mlp_dim, config.batch_size) == (4, 1024, 32)
    assert (config.num_train_steps, config.optimizer.warmup_steps) == (20_000, 8_000)
    # learning_rate is the peak: LRA's rsqrt constant 0.05 over sqrt(warmup).
    assert config.optimizer.schedule == "rsqrt"
    assert math.isclose(config.optimizer.learning_rate, 0.05 / math.sqrt(8_000))
    assert config.truncate and config.model.pool == "cls"
    assert config.model.positional == "sinusoidal" and not config.model.mask_zero_tokens
    assert text.get_config("length=4000").model.max_len == 4000

    config = listops.get_config()
    assert (config.model.pool, config.model.positional) == ("cls", "sinusoidal")
    assert (config.optimizer.schedule, config.optimizer.warmup_steps) == ("rsqrt", 1_000)
    assert math.isclose(config.optimizer.learning_rate, 0.05 / math.sqrt(1_000))

    config = retrieval.get_config()
    assert config.model.head == "two_tower" and config.model.max_len == 4000
    assert (config.model.emb_dim, config.model.mlp_dim, config.num_train_steps) == (128, 512, 5000)
    # LRA's dual encoder: the first token's output (no CLS vector), [u, v] -> 512 -> 256 -> 2.
    assert (config.model.pool, config.model.two_tower_head) == ("first", "lra")
    assert config.model.positional == "sinusoidal"
    assert config.optimizer.warmup_steps == 8_000
    assert math.isclose(config.optimizer.learning_rate, 0.05 / math.sqrt(8_000))

    config = image.get_config()
    assert (config.model.num_heads, config.model.num_layers, config.model.qkv_dim) == (8, 1, 64)
    assert (config.batch_size, config.num_train_steps, config.optimizer.warmup_steps) == (
        256,
        35_000,
        175,
    )
    assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.3, 0.2)
    assert config.optimizer.schedule == "cosine" and config.optimizer.learning_rate == 5e-4
    assert config.model.positional == "learned" and config.model.mask_zero_tokens

    config = pathfinder.get_config()
    assert config.model.max_len == 1024 and config.model.pool == "mean"
    assert config.model.positional == "sinusoidal" and config.model.mask_zero_tokens
    assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.2, 0.1)
    assert (config.model.emb_dim, config.model.num_heads, config.model.qkv_dim) == (32, 4, 16)
    assert (config.batch_size, config.num_train_steps, config.optimizer.warmup_steps) == (
        512,
        62_400,
        312,
    )
    assert config.task_options.contour_length == 14

    config = pathfinder.get_config("resolution=64")  # LRA's pathfinder64 config
    model = config.model
    assert (model.max_len, model.pool, model.positional) == (4096, "cls", "learned")
    assert (model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim) == (
        32,
        4,
        2,
        32,
        32,
    )
    assert (model.dropout_rate, model.attention_dropout_rate, model.mask_zero_tokens) == (
        0.1,
        0.1,
        True,
    )
    assert (config.batch_size, config.num_train_steps, config.optimizer.warmup_steps) == (
        256,
        125_000,
        625,
    )
    assert (config.optimizer.schedule, config.optimizer.learning_rate) == ("cosine", 1e-3)
    assert (config.optimizer.weight_decay, config.optimizer.grad_clip_norm) == (0.0, 0.0)

    config = pathfinder.get_config("resolution=128")  # Path-X
    assert config.model.max_len == 16_384 and config.task_options.resolution == 128
    assert (config.model.pool, config.model.positional) == ("mean", "learned")
    assert config.model.mask_zero_tokens
    assert (config.model.num_heads, config.model.num_layers, config.batch_size) == (2, 1, 64)
    assert config.num_train_steps == 500_000 and config.optimizer.grad_clip_norm == 1.0
    assert config.optimizer.warmup_steps == 2_500


@pytest.mark.parametrize(
    "module, arg, eval_every",
    [
        (listops, None, 50),
        (text, None, 100),
        (retrieval, None, 100),
        (image, None, 175),
        (pathfinder, None, 312),
        (pathfinder, "resolution=64", 625),
        (pathfinder, "resolution=128", 2_500),
    ],
)
def test_lra_configs_evaluate_as_often_as_lra_and_build_its_model(module, arg, eval_every):
    """LRA's eval_frequency per task, and its model beyond the config fields: its init, the
    outer-product padding mask and the CLS vector with the first token's mask (at every attention
    variant and size; tiny keeps the model but evaluates every 250 steps)."""
    config = module.get_config(arg)
    assert config.eval_every_steps == eval_every
    for size in ("base", "tiny"):
        tail = f",{arg}" if arg else ""
        model = module.get_config(f"size={size},attention=linear{tail}").model
        assert (model.init, model.padding_mask, model.cls_mask) == ("lra", "outer", "first_token")
    assert module.get_config(f"size=tiny,{arg}" if arg else "size=tiny").eval_every_steps == 250


def test_non_lra_configs_keep_flax_init_and_key_masks():
    """Zoology's Figure 2 model (recall at size=base) starts as Zoology's, the rest as Flax's."""
    tiny = recall.get_config("size=tiny")
    for config in (tiny, distance.get_config(), base.get_config()):
        model = config.model
        assert (model.init, model.padding_mask, model.cls_mask) == ("nnx", "keys", "real")
        assert not model.tie_output
    model = recall.get_config().model
    assert (model.init, model.padding_mask, model.cls_mask) == ("zoology", "keys", "real")


def test_recall_base_is_zoology_figure2():
    """size=base is Figure 2's protocol (zoology/experiments/iclr24_zoology_figure2/configs.py)."""
    config = recall.get_config()
    options = config.task_options
    assert (options.length, options.num_pairs, options.vocab_size) == (128, 8, 8192)
    assert (options.queries, options.power_a, options.filler) == ("power_law", 0.01, "zero")
    assert (options.num_train, options.num_test) == (100_000, 3_000)
    model = config.model
    assert (model.head, model.causal, model.positional, model.mlp) == (
        "tagger",
        True,
        "learned",
        False,
    )
    assert (model.num_layers, model.num_heads, model.emb_dim, model.qkv_dim) == (2, 1, 128, 128)
    assert (model.dropout_rate, model.attention_dropout_rate) == (0.0, 0.1)
    assert (model.init, model.tie_output) == ("zoology", True)  # GPT-2's init; lm_head = embedding
    assert config.batch_size == 512 and config.num_train_steps == 64 * 100_000 // 512
    assert (config.optimizer.schedule, config.optimizer.weight_decay) == ("cosine", 0.1)
    assert config.stop_at_validation_accuracy == 0.99  # Zoology's TrainConfig
    assert pytest.approx(np.logspace(-4, -2, 4), rel=1e-4) == recall.ZOOLOGY_LEARNING_RATES
    # Figure 2's (length, pairs) points follow from `pairs=`; batch 256 at length 256.
    assert recall.get_config("pairs=4").task_options.length == 64
    config = recall.get_config("pairs=16,width=512")
    assert (config.task_options.length, config.batch_size, config.model.emb_dim) == (256, 256, 512)
    assert not config.model.attention_options.t5.t5_bidirectional


def test_diagnostic_configs_default_to_what_learns():
    config = recall.get_config("size=tiny")
    assert (config.model.head, config.model.causal, config.model.positional) == (
        "tagger",
        True,
        "sinusoidal",
    )
    assert config.model.token_init_std == 1.0 and config.model.mlp
    assert (config.task_options.length, config.task_options.num_pairs) == (64, 8)
    assert config.task_options.vocab_size == 128
    # One argument sweeps the pairs; the length follows unless given.
    assert recall.get_config("size=tiny,pairs=32").task_options.length == 128
    assert recall.get_config("size=tiny,pairs=32,length=256").task_options.length == 256
    config = distance.get_config("distance=100,length=128,layers=2")
    assert (config.task_options.distance, config.model.num_layers) == (100, 2)
    assert (config.model.head, config.model.positional) == ("tagger", "sinusoidal")


@pytest.mark.parametrize(
    "module, arg, message",
    [
        (pathfinder, "resolution=48", "resolution='48' is not valid"),
        (pathfinder, "contour_length=long", "contour_length='long' must be an integer"),
        (text, "length=0", "length='0' must be a positive integer"),
        (recall, "pairs=x", "pairs='x' must be a positive integer"),
        (image, "size=huge", "size='huge' is not valid"),
    ],
)
def test_config_argument_errors(module, arg, message):
    with pytest.raises(UserError, match=message):
        module.get_config(arg)


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_each_task_declares_every_option_default_once(name):
    """A task's default_options are complete (its builder config accepts them) and are what a
    config starts from: set_task changes only the options it names, and refuses unknown ones."""
    task = tasks.get_task(name)
    defaults = task.default_options()
    if name in ("text", "image", "retrieval"):  # their defaults name no user file yet
        assert set(defaults) <= {"source", "release_dir"}
    else:
        task.builder_config(defaults)
    config = base.get_config()
    first = next(iter(defaults))
    base.set_task(config, name, **{first: defaults[first]})
    assert config.task == name and config.task_options.to_dict() == defaults
    with pytest.raises(ValueError, match=rf"task {name} has unknown option\(s\) \['nope'\]"):
        base.set_task(config, name, nope=1)
