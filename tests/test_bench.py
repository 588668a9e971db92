"""`launch.sh bench` end to end at toy sizes: it writes the CSV, the plot and the markdown report,
with ratios to dense full attention measured in the same run. Timings are never asserted."""

import csv
import os
import subprocess
import sys

import pytest
from absl.testing import flagsaver

from research import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_writes_csv_plot_and_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "research.bench", "--lengths=64", "--long_lengths=128",
         "--variants=dense,full,full_dropout,rope_dropout,local,linear,performer",
         "--train_lengths=64", "--train_repeats=1",
         "--train_variants=local", "--train_batch=2", "--fit_batch=2", "--batch=2",
         "--heads=2", "--head_dim=8", "--repeats=1", "--peak_sizes=256",
         "--causal_variants=linear,performer", "--causal_lengths=16", "--causal_batch=2",
         f"--out={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["bench.csv", "bench.md", "bench.png"]
    with open(tmp_path / "bench.csv") as file:
        rows = list(csv.DictReader(file))
    layers = {(r["variant"], int(r["length"])) for r in rows if r["kind"] == "layer"}
    assert ("local", 128) in layers and ("full", 128) in layers and ("dense", 128) not in layers
    assert ("full_dropout", 64) in layers  # full attention trained with attention dropout
    assert ("rope_dropout", 128) in layers
    assert all(r["status"] == "ok" and float(r["seconds"]) > 0 for r in rows)
    dense = [r for r in rows if r["variant"] == "dense"]
    assert all(float(r["time_vs_dense"]) == 1.0 for r in dense)
    report = (tmp_path / "bench.md").read_text()
    assert "## Targets" in report and "| local |" in report
    assert "performer (256 features) at 4K: <= 1.5x linear's memory" in report
    assert "## Causal, short sequences (batch 2)" in report and "| performer | 16 |" in report
    causal = {r["variant"] for r in rows if r["kind"] == "causal_layer"}
    assert causal == {"linear", "performer"}
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--variants=fastest", "unknown --variants ['fastest']"),
        ("--causal_variants=fastest", "unknown --causal_variants ['fastest']"),
        ("--train_variants=fastest", "unknown --train_variants ['fastest']"),
        ("--variants=full,cudnn", "--variants ['cudnn'] run on a GPU only; this is cpu"),
    ],
)
def test_a_variant_it_cannot_run_is_refused_before_anything_is_written(flag, expected, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "research.bench", flag, f"--out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and f"error: {expected}" in result.stderr
    assert not out.exists()


def test_bfloat16_layers_run_and_say_so(tmp_path):
    """The accelerator protocol's compute dtype, on this CPU: parameters cast as in training."""
    result = subprocess.run(
        [sys.executable, "-m", "research.bench", "--dtype=bfloat16", "--lengths=64",
         "--long_lengths=", "--variants=full_dropout,local", "--train_variants=",
         "--causal_variants=", "--batch=2", "--heads=2", "--head_dim=8", "--repeats=1",
         "--peak_sizes=128", f"--out={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "bench.csv") as file:
        rows = list(csv.DictReader(file))
    assert {r["variant"] for r in rows} == {"full_dropout", "local"}
    assert all(r["status"] == "ok" and float(r["seconds"]) > 0 for r in rows)
    assert "bfloat16 matmul peak" in (tmp_path / "bench.md").read_text()


@pytest.fixture
def parsed_flags():
    if not bench.FLAGS.is_parsed():
        bench.FLAGS(["bench"])
    with flagsaver.flagsaver():
        yield bench.FLAGS


def test_a_gpu_runs_issue_21s_protocol_unless_a_flag_says_otherwise(parsed_flags):
    parsed_flags["heads"].parse("2")  # as if given on the command line
    bench.apply_platform_defaults("gpu")
    assert parsed_flags.dtype == "bfloat16" and parsed_flags.batch == 8
    assert parsed_flags.heads == 2 and parsed_flags.head_dim == 64
    assert parsed_flags.lengths == ["4096", "16384"]
    assert parsed_flags.max_timed_quadratic_length == 16384
    assert parsed_flags.out == "docs/benchmarks/gpu" and parsed_flags.train_batch == 32
    labels = parsed_flags.variants
    assert "cudnn" in labels and "xla_reference" not in labels
    assert {f"{name}_dropout" for name in bench.SOFTMAX} <= set(labels)
    assert set(bench.SOFTMAX) == {"full", "local", "block_local", "rope", "alibi", "t5", "shaw"}


def test_the_cpu_keeps_its_own_protocol(parsed_flags):
    bench.apply_platform_defaults("cpu")
    assert parsed_flags.dtype == "float32" and parsed_flags.heads == 4
    assert parsed_flags.out == "docs/benchmarks"
    assert "cudnn" not in bench.CPU_LABELS and "rope_dropout" not in bench.CPU_LABELS
    assert {"xla_reference", "dense", "full_dropout", *bench.ATTENTION} == set(bench.CPU_LABELS)


def test_accelerator_targets_compare_each_variant_with_cudnn_in_the_same_run(parsed_flags):
    def layer(variant, length, seconds):
        return bench.Row("layer", variant, length, 8, seconds=seconds)

    slow = {("shaw_dropout", 16384): 2.0, ("local", 16384): 0.05, ("block_local", 16384): 0.2}
    rows = [layer("cudnn", n, 1.0) for n in (4096, 16384)] + [
        layer(label, n, slow.get((label, n), 1.2))
        for label in (*bench.SOFTMAX, *(f"{name}_dropout" for name in bench.SOFTMAX))
        for n in (4096, 16384)
        if label != "alibi_dropout" or n == 4096  # one length missing: not measured
    ]
    rows += [bench.Row("train_step", "full", 2000, 32, flop_utilisation=u) for u in (0.35, 0.2)]
    met = {target: ok for target, _, ok in bench.targets(rows, "gpu")}
    assert met["rope: <= 1.5x cudnn full attention's time, 4K, 16K"] is True
    assert met["shaw_dropout: <= 1.5x cudnn full attention's time, 4K, 16K"] is False
    assert met["alibi_dropout: <= 1.5x cudnn full attention's time, 4K, 16K"] is None
    assert met["local (128) at 16K: >= 10x faster than full"] is True  # 1.2 s against 0.05 s
    assert met["block_local (128) at 16K: >= 10x faster than full"] is False  # 6x
    steps = [ok for target, _, ok in bench.targets(rows, "gpu") if "ListOps" in target]
    assert steps == [True, False]
    assert len(met) == 2 * len(bench.SOFTMAX) + 2 + 1  # the two train rows share a description


def test_a_row_that_fails_is_reported_and_the_run_goes_on(capsys):
    def compile_refused():
        raise RuntimeError("Triton refused the kernel\nmore detail")

    row = bench.guarded(compile_refused, "layer", "t5_dropout", 16384, 8)
    assert (row.kind, row.variant, row.length, row.batch) == ("layer", "t5_dropout", 16384, 8)
    assert row.status == "error: RuntimeError Triton refused the kernel"
    assert "Traceback" in capsys.readouterr().err
