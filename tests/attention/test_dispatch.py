"""Which implementation `auto` picks, per platform and call, and why (docs/attention.md has the
same table); the kernel's default tiles; refusals of explicit platform kernels."""

import jax
import numpy as np
import pytest
from attention_testing import build, qkv

from research.attention.dispatch import (
    Call,
    choose_implementation,
    default_blocks,
    say_interpreted,
)
from research.attention.relative import SCHEMES
from research.attention.sparsity import Band
from research.errors import UserError

BF16, F32 = np.dtype("bfloat16"), np.dtype("float32")


def _call(backend, *, dtype=BF16, band=None, position="none", dropout=False, length=4096):
    return Call(
        backend=backend,
        dtype=dtype,
        head_dim=64,
        band=Band() if band is None else band,
        position=SCHEMES[position],
        dropout=dropout,
        q_len=length,
        kv_len=length,
    )


# (backend, call options, implementation `auto` picks): the reason is in the comment.
AUTO = [
    # GPU: cuDNN wherever it can serve the call without a T x S array ...
    ("gpu", {}, "cudnn"),
    ("gpu", {"band": Band(causal=True)}, "cudnn"),
    ("gpu", {"band": Band(causal=True, window=128)}, "cudnn"),  # local_window_size
    ("gpu", {"position": "rope"}, "cudnn"),  # rotated before the call
    # ... else the Pallas kernel: bands, every position scheme and dropout in-kernel ...
    ("gpu", {"position": "alibi"}, "pallas"),  # cuDNN would need a T x S bias
    ("gpu", {"dtype": F32}, "pallas"),  # cuDNN needs bf16 / fp16
    ("gpu", {"dropout": True}, "pallas"),  # cuDNN's dropout is not keyed by ours
    ("gpu", {"dropout": True, "position": "alibi", "band": Band(window=128)}, "pallas"),
    ("gpu", {"band": Band(window=128)}, "pallas"),  # cuDNN: a two-sided window only as T x S
    ("gpu", {"band": Band(block=64)}, "pallas"),
    ("gpu", {"position": "t5"}, "pallas"),  # cuDNN would need a T x S bias
    ("gpu", {"position": "t5", "dropout": True}, "pallas"),
    ("gpu", {"position": "shaw", "dropout": True}, "pallas"),  # cuDNN has no value term
    # ... else XLA's dense path (never a loop).
    ("gpu", {"dtype": np.dtype("float64")}, "dense"),  # neither kernel takes float64
    # TPU: splash for any band without a bias or dropout ...
    ("tpu", {}, "splash"),
    ("tpu", {"band": Band(window=128)}, "splash"),
    ("tpu", {"band": Band(block=64, neighbours=True, causal=True)}, "splash"),
    ("tpu", {"dtype": F32, "position": "rope"}, "splash"),
    # ... else the Pallas kernel: position terms and dropout in-kernel ...
    ("tpu", {"position": "alibi"}, "pallas"),
    ("tpu", {"position": "t5"}, "pallas"),
    ("tpu", {"position": "shaw", "band": Band(window=128)}, "pallas"),
    ("tpu", {"dropout": True}, "pallas"),
    ("tpu", {"dropout": True, "dtype": F32, "band": Band(block=64)}, "pallas"),
    # ... else the XLA loop.
    ("tpu", {"dropout": True, "dtype": np.dtype("float16")}, "kernel"),  # neither takes fp16
    # CPU: dense up to 256 tokens, the kernel beyond.
    ("cpu", {"length": 256}, "dense"),
    ("cpu", {"length": 257}, "kernel"),
    ("cpu", {"dtype": F32, "position": "shaw", "dropout": True}, "kernel"),
    ("cpu", {"band": Band(window=128)}, "kernel"),
]


@pytest.mark.parametrize(("backend", "options", "want"), AUTO)
def test_auto_picks_per_platform(backend, options, want):
    implementation, why = choose_implementation("auto", _call(backend, **options))
    assert implementation == want, why
    assert why


def test_an_explicit_choice_is_kept():
    assert choose_implementation("dense", _call("gpu"))[0] == "dense"
    assert choose_implementation("kernel", _call("cpu", length=8))[0] == "kernel"


@pytest.mark.parametrize(
    ("backend", "band", "want"),
    [
        ("cpu", Band(), (512, 1024)),
        ("cpu", Band(causal=True), (512, 1024)),
        ("tpu", Band(), (512, 512)),
        ("cpu", Band(window=128), (256, 256)),
        ("cpu", Band(window=32), (128, 128)),
        ("cpu", Band(window=300), (512, 512)),
        ("cpu", Band(block=64, neighbours=True), (128, 128)),
        ("cpu", Band(block=128, neighbours=True), (256, 256)),
        ("cpu", Band(block=48), (144, 144)),  # a whole number of blocks per query tile
    ],
)
def test_default_blocks(backend, band, want):
    assert default_blocks(backend, band) == want


def test_an_unusable_platform_kernel_is_a_one_line_error():
    """float32 inputs: cuDNN is refused for want of a GPU here, and for the dtype on a GPU."""
    module = build("full", {"implementation": "cudnn"})
    q, k, v = qkv(0)
    why = "bfloat16 or float16 inputs" if jax.default_backend() == "gpu" else "a GPU"
    with pytest.raises(
        UserError, match=rf"full\.implementation='cudnn' is not usable: it needs {why}"
    ):
        module.attend(q, k, v, None, dropout_key=None)


def test_splash_runs_here_in_interpret_mode_and_says_so_once(capsys):
    """Asked for on CPU, splash runs interpreted (the TPU path, tested in CI), and a user who
    asked for it reads once on stderr that this is a slow test path, not a fast kernel."""
    say_interpreted.cache_clear()
    module = build("local", {"implementation": "splash", "window": 3})
    dense = build("local", {"implementation": "dense", "window": 3})
    q, k, v = qkv(1, length=20)
    got = module.attend(q, k, v, None, dropout_key=None)
    module.attend(q, k, v, None, dropout_key=None)
    want = dense.attend(q, k, v, None, dropout_key=None)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    notes = capsys.readouterr().err.splitlines()
    assert notes == [
        "note: attention implementation='splash' on cpu runs Pallas in interpret mode, a path "
        "for tests and several times slower than 'auto'; set "
        "config.model.attention_options.<variant>.implementation=auto for speed"
    ]
