"""`launch.sh bench` end to end at toy sizes: it writes the CSV, the plot and the markdown report,
with ratios to dense full attention measured in the same run. Timings are never asserted."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_writes_csv_plot_and_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "research.bench", "--lengths=64", "--long_lengths=128",
         "--variants=dense,full,full_dropout,local,linear,performer", "--train_lengths=64",
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


@pytest.mark.parametrize("flag", ["variants", "causal_variants"])
def test_unknown_variant_is_refused(flag):
    result = subprocess.run(
        [sys.executable, "-m", "research.bench", f"--{flag}=fastest"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and f"unknown --{flag} ['fastest']" in result.stderr
