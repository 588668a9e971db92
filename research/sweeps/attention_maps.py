"""Attention maps of a trained model: `python -m research.sweeps.attention_maps --workdir W
[--example N] [--split test|validation|train] [--out PATH]` (or `./launch.sh attention-maps ...`).

Rebuilds the model from `W/config.json`, restores the latest checkpoint's parameters, runs example
N of the split through the encoder block by block and draws every block's attention weights as a
PNG grid, layers down and heads across (default `W/attention_maps/<split>_<N>.png`). Each block's
weights come from its attention module's own `weights` method on its own inputs (the
`attention_norm` output, projected by the module's `qkv`), so the map is what the model computes:
for linear and Performer the normalised phi(q).phi(k) their output implies, for local variants the
band with zeros outside. Two-tower tasks show the first document; a CLS vector, when the model
prepends one, is position 0. It runs in float32 whatever the run's compute_dtype. Mistakes (no
workdir, no checkpoint, an example out of range, a bad split) are one-line errors, exit status 2.
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from research import tasks
from research.errors import UserError, check_choice, fail
from research.models import ModelConfig, build_model
from research.tasks.pipeline import mask_field, pad_example
from research.training import checkpoint
from research.training.paths import workdir_path

#: Sequences up to this many positions get their tokens as tick labels; longer ones none.
MAX_TICK_LABELS = 64
COLORMAP = "viridis"  # perceptually uniform, readable in grey


# ----------------------------------------------------------------------------- the run


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config the run wrote to `workdir/config.json`."""
    directory = workdir_path(workdir)
    if not directory.is_dir():
        raise UserError(f"--workdir {workdir} does not exist")
    path = directory / "config.json"
    if not path.exists():
        raise UserError(f"--workdir {workdir} holds no config.json; is it a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_model(workdir: str, config: ml_collections.ConfigDict) -> tuple[nnx.Module, int]:
    """The model `config` describes with the latest checkpoint's parameters and state (Performer's
    stored projection included), and that checkpoint's step. Built abstractly first, so nothing is
    initialised only to be overwritten."""
    task = tasks.get_task(config.task).at_options(config.task_options)
    model_config = ModelConfig.from_config(config.model, class_token_offset=task.class_token_offset)
    abstract = nnx.eval_shape(lambda: build_model(model_config, rngs=nnx.Rngs(params=0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    layout = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
    target = jax.tree.map(layout, {"params": params, "rest": rest})
    found = checkpoint.restore_model_state(workdir_path(workdir) / "checkpoints", target)
    if found is None:
        raise UserError(f"--workdir {workdir} holds no checkpoint (nothing under checkpoints/)")
    state, step = found
    return nnx.merge(graphdef, state["params"], state["rest"]), step


def load_example(
    config: ml_collections.ConfigDict, split: str, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_T, mask_T) of example `index` of `split`, padded to config.model.max_len as the
    training pipeline pads it; the first input of a two-tower task."""
    task = tasks.get_task(config.task)
    builder = tasks.prepare_builder(task, config.task_options, config.data_dir)
    source = tasks.load_sources(builder)[split]
    if not 0 <= index < len(source):
        raise UserError(
            f"--example {index} is out of range: the {split} split has {len(source)} examples "
            f"(0 to {len(source) - 1})"
        )
    padded = pad_example(
        source[index],
        max_len=config.model.max_len,
        sequence_fields=task.sequence_fields,
        truncate=config.truncate,
    )
    field = task.sequence_fields[0]
    return padded[field], padded[mask_field(field)]


# ----------------------------------------------------------------------------- the weights


def encoder_attention_weights(
    encoder: nnx.Module, tokens_BT: jax.Array, mask_BT: jax.Array
) -> tuple[list[jax.Array], jax.Array]:
    """Every block's attention weights_BHLL (float32, no dropout) and mask_BL, L = T (+1 with CLS).

    Follows `Encoder.__call__` block by block (deterministic: its dropout is the identity), asking
    each block's attention for `weights` on what the block feeds it: `attention_norm(x)`,
    projected by the module's own `qkv`.
    """
    x_BLE, mask_BL = encoder.embed(tokens_BT, mask_BT)
    weights = []
    for block in encoder.blocks:
        q_BLHD, k_BLHD, _ = block.attention.qkv(block.attention_norm(x_BLE))
        weights.append(block.attention.weights(q_BLHD, k_BLHD, mask_BL))
        x_BLE = block(x_BLE, mask_BL, deterministic=True, rngs=None)
    return weights, mask_BL


def attention_weights_for_example(
    model: nnx.Module, tokens_T: np.ndarray, mask_T: np.ndarray
) -> tuple[np.ndarray, bool]:
    """weights_NHLL (layers N, heads H) of one example, trimmed to its real length L (its unpadded
    tokens, plus the CLS position when the model prepends one), and whether it does."""

    @nnx.jit
    def run(model, tokens_BT, mask_BT):
        return encoder_attention_weights(model.encoder, tokens_BT, mask_BT)

    weights, mask_BL = run(model, jnp.asarray(tokens_T)[None], jnp.asarray(mask_T)[None])
    has_cls = mask_BL.shape[1] > len(tokens_T)
    length = int(np.asarray(mask_T).sum()) + int(has_cls)
    stacked_NHLL = np.stack([np.asarray(w[0]) for w in weights])
    return stacked_NHLL[:, :, :length, :length], has_cls


# ----------------------------------------------------------------------------- the figure


def plot_attention(
    weights_NHLL: np.ndarray, labels: list[str] | None, title: str, out_path: pathlib.Path
) -> None:
    """A grid of layers x heads, each panel its own colour scale (0 to its largest weight) with
    its colour bar, queries down and keys across; `labels` become ticks when given."""
    layers, heads, length = weights_NHLL.shape[:3]
    panel = 3.0 if labels is None else max(3.0, 0.13 * length)
    # Fixed margins in inches, not a layout engine: measuring a thousand tick labels made the
    # figure several times slower to draw.
    width, height = panel * heads * 1.3 + 0.8, panel * layers * 1.2 + 1.2
    figure = Figure(figsize=(width, height))
    axes = figure.subplots(layers, heads, squeeze=False)
    figure.subplots_adjust(
        left=0.7 / width,
        right=1 - 0.6 / width,
        bottom=0.6 / height,
        top=1 - 0.6 / height,
        wspace=0.3,
        hspace=0.2 if labels is None else 0.15,
    )
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            weights_LL = weights_NHLL[layer, head]
            image = ax.imshow(
                weights_LL,
                cmap=COLORMAP,
                vmin=0.0,
                vmax=max(float(weights_LL.max()), 1e-12),
                interpolation="nearest",
            )
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
            if labels is None:
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.set_xticks(range(length), labels, rotation=90, fontsize=6)
                ax.set_yticks(range(length), labels, fontsize=6)
    figure.suptitle(title)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100)


def save_attention_map(
    workdir: str, out_path: str | pathlib.Path | None = None, *, example: int = 0, split="test"
) -> pathlib.Path:
    """Draws example `example` of `split` through the trained model in `workdir`; returns the PNG's
    path (default `workdir/attention_maps/<split>_<example>.png`). Raises UserError for a missing
    workdir or checkpoint, a bad split or an example out of range."""
    check_choice("--split", split, tasks.SPLITS)
    config = load_config(workdir)
    model, step = restore_model(workdir, config)
    tokens_T, mask_T = load_example(config, split, example)
    weights_NHLL, has_cls = attention_weights_for_example(model, tokens_T, mask_T)
    labels = None
    if weights_NHLL.shape[-1] <= MAX_TICK_LABELS:
        token_label = tasks.get_task(config.task).at_options(config.task_options).token_label
        labels = ["CLS"] * has_cls + [token_label(int(t)) for t in tokens_T[: int(mask_T.sum())]]
    title = (
        f"{config.task}: {config.model.attention} attention, {split} example {example}, step {step}"
    )
    if out_path is None:
        out_path = workdir_path(workdir) / "attention_maps" / f"{split}_{example}.png"
    out_path = pathlib.Path(str(out_path))
    plot_attention(weights_NHLL, labels, title, out_path)
    return out_path


# ----------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """argparse's usage mistakes as one line, like every other error here."""
        fail(message)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="attention-maps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a training run's --workdir")
    parser.add_argument("--example", type=int, default=0, help="index in the split (0)")
    parser.add_argument("--split", default="test", help="train, validation or test (test)")
    parser.add_argument("--out", default=None, help="PNG path (W/attention_maps/<split>_<N>.png)")
    args = parser.parse_args(argv)
    from absl import logging  # orbax and tfds INFO logs would bury the one line printed

    logging.set_verbosity(logging.WARNING)
    try:
        path = save_attention_map(args.workdir, args.out, example=args.example, split=args.split)
    except UserError as error:
        fail(str(error))
    print(f"attention maps in {path}")


if __name__ == "__main__":
    main()
