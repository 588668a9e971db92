"""research.sweeps.attention_maps on tiny trained recall runs: the PNG, the weights behind its
panels (one per layer and head, rows summing to 1, causal, the local band), and the one-line
errors."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from configs import recall
from research import tasks
from research.sweeps import attention_maps
from research.sweeps.attention_maps import attention_weights_for_example, save_attention_map
from research.training.train import train_and_evaluate

LAYERS, HEADS, LENGTH = 2, 4, 64  # configs/recall.py's model and sequence length


@pytest.fixture(scope="module", params=["local", "linear"])
def trained(request, data_dir, tmp_path_factory):
    """(attention name, workdir) of a tiny recall run, trained a few steps in-process."""
    config = recall.get_config(f"size=tiny,attention={request.param}")
    config.num_train_steps = 3
    config.task_options.update(num_train=128, num_val=32, num_test=32)
    config.eval_every_steps = 0
    config.eval_batch_size = 32
    config.data_dir = data_dir
    config.compilation_cache_dir = ""
    workdir = tmp_path_factory.mktemp(f"maps_{request.param}")
    train_and_evaluate(config, str(workdir))
    return request.param, workdir


def test_png_written_with_a_panel_per_layer_and_head(trained):
    name, workdir = trained
    path = save_attention_map(str(workdir), example=1)
    assert path == workdir / "attention_maps" / "test_1.png"
    height, width = imread(path).shape[:2]
    assert width > height  # heads (4) across, layers (2) down
    if name == "local":  # once is enough (drawing 64 tick labels a panel takes seconds)
        out = save_attention_map(str(workdir), workdir / "elsewhere.png", split="validation")
        assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weights_per_layer_and_head(trained):
    name, workdir = trained
    config = attention_maps.load_config(str(workdir))
    model, step = attention_maps.restore_model(str(workdir), config)
    assert step == 3
    tokens_T, mask_T = attention_maps.load_example(config, "test", 0)
    weights, has_cls = attention_weights_for_example(model, tokens_T, mask_T)
    assert not has_cls and weights.shape == (LAYERS, HEADS, LENGTH, LENGTH)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    t, s = np.arange(LENGTH)[:, None], np.arange(LENGTH)[None, :]
    outside = s > t  # the recall model is causal
    if name == "local":
        outside |= t - s > config.model.attention_options.local.window
    assert (weights[..., outside] == 0).all()
    # A padded example is trimmed to its real tokens, padding gets no weight.
    padded_mask_T = mask_T & (np.arange(LENGTH) < 40)
    trimmed, _ = attention_weights_for_example(
        model, np.where(padded_mask_T, tokens_T, 0), padded_mask_T
    )
    assert trimmed.shape == (LAYERS, HEADS, 40, 40)
    np.testing.assert_allclose(trimmed.sum(-1), 1.0, atol=1e-5)


def test_token_labels():
    """Each task labels its own tokens (`Task.token_label`), which the figure's ticks show."""
    recall = tasks.get_task("recall").at_options({"vocab_size": 128})
    assert [recall.token_label(t) for t in (0, 2, 64, 70)] == [".", "k2", "v0", "v6"]
    assert tasks.get_task("listops").token_label(11) == "[MAX"
    assert tasks.get_task("text").token_label(ord("a")) == "a"
    assert tasks.get_task("text").token_label(10) == "\\n"


def run_cli(capsys, *argv) -> str:
    """The CLI's stderr; it must exit with status 2 and print one `error:` line."""
    with pytest.raises(SystemExit) as exit_info:
        attention_maps.main(list(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_one_line_errors(trained, tmp_path, capsys):
    _, workdir = trained
    assert "does not exist" in run_cli(capsys, "--workdir", str(tmp_path / "nope"))
    assert "no config.json" in run_cli(capsys, "--workdir", str(tmp_path))
    (tmp_path / "config.json").write_text((workdir / "config.json").read_text())
    assert "no checkpoint" in run_cli(capsys, "--workdir", str(tmp_path))
    assert "--split='dev'" in run_cli(capsys, "--workdir", str(workdir), "--split", "dev")
    message = run_cli(capsys, "--workdir", str(workdir), "--example", "32")
    assert "out of range" in message and "32 examples" in message
    assert "--workdir" in run_cli(capsys)  # argparse's own mistakes are one line too
    assert json.loads((workdir / "config.json").read_text())["task"] == "recall"
