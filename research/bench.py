"""Speed and memory of every attention variant against sequence length: `./launch.sh bench`.

For each variant, at the options a user gets by default, and each length it times forward plus
backward of one attention layer (median of repeats, compilation excluded) and reads its peak
memory two ways: the compiled program's own memory analysis (arguments + outputs + temporaries)
and the growth of the process's resident set. It also times a train step of the ListOps base model
for every variant and checks that the published batch fits the machine, measures the machine's
matmul throughput, and reports FLOP utilisation and every ratio to dense full attention (and, for
the position schemes, to full attention on the same kernel) measured in the same run. Writes
bench.csv, bench.png (log-log) and bench.md (LRA table 2 style) to --out.
"""

import csv
import dataclasses
import functools
import os
import statistics
import threading
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import psutil
from absl import app, flags
from flax import nnx

from research.attention import ATTENTION, make_attention
from research.attention.base import SelfAttention
from research.attention.full import SoftmaxAttention
from research.attention.sparsity import Band
from research.errors import EXIT_FAILED, fail
from research.training.steps import cast_floating, create_train_state, make_train_step

FLAGS = flags.FLAGS
flags.DEFINE_list("lengths", ["1024", "2048", "4096", "8192", "16384"], "N.")
flags.DEFINE_list(
    "long_lengths", ["32768"], "Extra lengths for every variant of linear memory (not dense)."
)
flags.DEFINE_list("variants", [], "Variants to run (default: the platform's, PLATFORM_DEFAULTS).")
flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16"], "Compute dtype (bfloat16 by default on GPU, TPU)."
)
flags.DEFINE_list(
    "peak_sizes", ["1024", "2048", "4096"], "Square matmul sizes whose best run is the peak."
)
flags.DEFINE_integer("batch", 8, "Batch size of the attention-layer benchmark.")
flags.DEFINE_integer("heads", 4, "Heads.")
flags.DEFINE_integer("head_dim", 64, "Width of each head.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (the median is reported).")
flags.DEFINE_list("train_lengths", ["2000"], "Lengths of the train-step benchmark (ListOps: 2000).")
flags.DEFINE_list("train_variants", list(ATTENTION), "Train-step variants (default: all).")
flags.DEFINE_integer("train_batch", 4, "Batch of the timed train step.")
flags.DEFINE_integer("train_repeats", 3, "Timed repeats of the train step (the median).")
flags.DEFINE_integer(
    "fit_batch", 32, "Batch whose compiled train-step memory must fit the machine (ListOps: 32)."
)
flags.DEFINE_float(
    "memory_fraction", 0.6, "Skip programs needing more than this much of the device's memory."
)
flags.DEFINE_integer(
    "max_timed_quadratic_length",
    4096,
    "Above this length, variants quadratic in N are compiled for their memory but not timed.",
)
flags.DEFINE_list(
    "causal_variants", ["full", "linear", "performer"], "Variants timed causal at short lengths."
)
flags.DEFINE_list("causal_lengths", ["64"], "Lengths of the causal rows (MQAR's: 64).")
flags.DEFINE_integer("causal_batch", 64, "Batch of the causal rows.")
flags.DEFINE_string("out", "docs/benchmarks", "Output folder.")


class XlaReferenceAttention(SelfAttention):
    """`jax.nn.dot_product_attention` (XLA), the baseline that dense full attention must match."""

    def attend(self, q_BTHD, k_BSHD, v_BSHD, key_mask_BS, *, dropout_key):
        mask = Band(causal=self.causal).mask(key_mask_BS, q_BTHD.shape[1], k_BSHD.shape[1])
        return jax.nn.dot_product_attention(q_BTHD, k_BSHD, v_BSHD, mask=mask)


# The registry's variants whose FLOPs grow linearly in N (the others' grow as N^2), and the options
# they are benchmarked at where these differ from the defaults.
LINEAR_FLOPS = ("local", "block_local", "linear", "performer")
BENCH_OPTIONS = {
    "local": {"window": 128},
    "block_local": {"block_size": 128, "neighbours": True},
    "performer": {"num_features": 256},
}
# The softmax variants (one band plus a position scheme: full.SoftmaxAttention), the ones with
# attention weights for attention dropout to act on.
SOFTMAX = tuple(name for name, cls in ATTENTION.items() if issubclass(cls, SoftmaxAttention))
# LRA's attention dropout rate, on the labels NAME_dropout (trained, in training mode).
DROPOUT_RATE = 0.1
# label -> (registry name, options, FLOPs are N^2 (quadratic) or linear in N): the XLA reference,
# dense full attention (the denominator of the CPU ratios), cuDNN full attention (the GPU's
# denominator), then every variant of the registry, the quadratic ones first, each at its default
# implementation (`auto`) and tiles, then each softmax variant with attention dropout.
VARIANTS = {
    "xla_reference": (None, {}, True),
    "dense": ("full", {"implementation": "dense"}, True),
    "cudnn": ("full", {"implementation": "cudnn"}, True),
    **{
        name: (name, BENCH_OPTIONS.get(name, {}), name not in LINEAR_FLOPS)
        for name in sorted(ATTENTION, key=lambda name: name in LINEAR_FLOPS)
    },
    **{
        f"{name}_dropout": (name, BENCH_OPTIONS.get(name, {}), name not in LINEAR_FLOPS)
        for name in SOFTMAX
    },
}
GPU_ONLY = ("cudnn",)
POSITION_VARIANTS = ("rope", "alibi", "t5", "shaw")
QUADRATIC_MEMORY = ("xla_reference", "dense", "cudnn")
# Of the machine the CPU bench was written for (the CI runners and the developers' machines).
MACHINE_MEMORY_GIB = 24

# What the bench measures by default on each platform: a flag's value there wherever the command
# line leaves it out (the flags' own defaults are the CPU's). CPU: the project's 2-core machine,
# float32, every variant once with dense full attention as the denominator (issue 11's targets).
# GPU and TPU, issue 21's protocol: bfloat16, B=8, H=8, D=64 at 4K and 16K, quadratic variants
# timed there too, every softmax variant with and without attention dropout against the
# platform's own full attention (cuDNN; on a TPU `full` is splash), and the ListOps step at its
# published batch against the bfloat16 matmul peak.
CPU_LABELS = [label for label in VARIANTS if label not in GPU_ONLY and (
    not label.endswith("_dropout") or label == "full_dropout")]  # fmt: skip
ACCELERATOR = {
    "dtype": "bfloat16",
    "heads": 8,
    "lengths": ["4096", "16384"],
    "long_lengths": [],
    "max_timed_quadratic_length": 16384,
    "peak_sizes": ["4096", "8192", "16384"],
    "repeats": 5,
    "train_batch": 32,
    "train_repeats": 5,
}
PLATFORM_DEFAULTS = {
    "cpu": {},
    "gpu": {
        **ACCELERATOR,
        "variants": [label for label in VARIANTS if label != "xla_reference"],
        "out": "docs/benchmarks/gpu",
    },
    "tpu": {
        **ACCELERATOR,
        "variants": [label for label in VARIANTS if label not in ("xla_reference", *GPU_ONLY)],
        "out": "docs/benchmarks/tpu",
    },
}
# The full attention each platform's accelerator targets are measured against.
REFERENCE = {"gpu": "cudnn", "tpu": "full"}


def apply_platform_defaults(platform: str) -> None:
    """Sets every flag the command line left out to PLATFORM_DEFAULTS[platform]'s value."""
    for name, value in PLATFORM_DEFAULTS.get(platform, {}).items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


@dataclasses.dataclass
class Row:
    kind: str  # "layer" or "train_step"
    variant: str
    length: int
    batch: int
    seconds: float = float("nan")
    tokens_per_second: float = float("nan")
    compiled_bytes: float = float("nan")
    rss_bytes: float = float("nan")
    flops: float = float("nan")
    flop_utilisation: float = float("nan")
    time_vs_dense: float = float("nan")
    memory_vs_dense: float = float("nan")
    fit_bytes: float = float("nan")  # train steps: compiled memory at --fit_batch
    status: str = "ok"


class PeakRss:
    """Samples the resident set size in a thread; `peak - start` is the growth during the block."""

    def __enter__(self):
        self.process, self.start = psutil.Process(), psutil.Process().memory_info().rss
        self.peak, self.running = self.start, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def compiled_bytes(compiled) -> int:
    analysis = compiled.memory_analysis()
    return int(
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def time_compiled(compiled, args, repeats: int) -> tuple[float, int]:
    """Median seconds over `repeats` after one warm-up call, and the RSS growth meanwhile."""
    jax.block_until_ready(compiled(*args))
    times = []
    with PeakRss() as rss:
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
    return statistics.median(times), rss.growth


def matmul_flops_per_second(sizes: tuple[int, ...], dtype: str, repeats: int = 5) -> float:
    """The machine's matmul peak in `dtype`, the ceiling for utilisation figures: the fastest
    single run over several large square matmuls (a median at one size understates the peak, and
    with it inflates every utilisation figure)."""
    best = 0.0
    for size in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
        compiled = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
        jax.block_until_ready(compiled(a, a))
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(a, a))
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def build_layer(label: str, width: int, heads: int, causal: bool = False) -> SelfAttention:
    name, options, _ = VARIANTS[label]
    base = dict(
        in_features=width, num_heads=heads, qkv_features=width, causal=causal, rngs=nnx.Rngs(0)
    )
    if name is None:
        return XlaReferenceAttention(**base)
    dropout_rate = DROPOUT_RATE if label.endswith("_dropout") else 0.0
    return make_attention(name, options, dropout_rate=dropout_rate, **base)


def layer_row(
    label: str, length: int, peak_flops: float, budget: float, causal: bool = False
) -> Row:
    """Forward + backward of one attention layer on (batch, length, heads * head_dim) inputs; a
    causal row ("causal_layer") at --causal_batch. It computes in --dtype as training does: the
    float32 parameters cast to it, their gradients float32."""
    batch, heads, head_dim = (
        FLAGS.causal_batch if causal else FLAGS.batch,
        FLAGS.heads,
        FLAGS.head_dim,
    )
    row = Row("causal_layer" if causal else "layer", label, length, batch)
    layer = build_layer(label, heads * head_dim, heads, causal)
    # Gradients for the trained parameters only, as in training (not Performer's random features).
    graphdef, params, state = nnx.split(layer, nnx.Param, ...)
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, length, heads * head_dim), FLAGS.dtype)
    mask = jnp.ones((batch, length), bool)

    training = label.endswith("_dropout")

    def loss(params, x):
        layer = nnx.merge(graphdef, cast_floating(params, FLAGS.dtype), state)
        rngs = nnx.Rngs(dropout=jax.random.key(2)) if training else None
        y = layer(x, mask, deterministic=not training, rngs=rngs)
        return jnp.sum(y.astype(jnp.float32))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    row.compiled_bytes = compiled_bytes(compiled)
    if row.compiled_bytes > budget:
        row.status = f"skipped: needs {row.compiled_bytes / 2**30:.1f} GiB"
        return row
    if VARIANTS[label][2] and length > FLAGS.max_timed_quadratic_length:
        row.status = "memory only"
        return row
    row.seconds, row.rss_bytes = time_compiled(compiled, (params, x), FLAGS.repeats)
    row.tokens_per_second = batch * length / row.seconds
    if VARIANTS[label][2] and not causal:  # exact attention: 4BHN^2d forward, twice that backward
        row.flops = (
            12 * batch * heads * length**2 * head_dim
        )  # (the kernel's recompute not counted)
        row.flop_utilisation = row.flops / row.seconds / peak_flops
    return row


def _listops_step(label: str, length: int, batch_size: int):
    """The compiled train step of the ListOps base model with variant `label`, and its inputs."""
    from configs import listops
    from research.models import ModelConfig, build_model
    from research.training.optim import OptimizerConfig, create_optimizer

    config = listops.get_config()
    name, options, _ = VARIANTS[label]
    config.model.update(vocab_size=16, num_classes=10, max_len=length, attention=name)
    config.model.attention_options[name].update(options)
    optimizer = create_optimizer(
        OptimizerConfig.from_config(config.optimizer), config.num_train_steps
    )
    model = ModelConfig.from_config(config.model)
    graphdef, state = create_train_state(
        functools.partial(build_model, model), config.seed, optimizer
    )
    rng = np.random.default_rng(0)
    batch = {
        "tokens": jnp.asarray(rng.integers(1, 16, (batch_size, length)), jnp.int32),
        "mask": jnp.ones((batch_size, length), bool),
        "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
    }
    step = make_train_step(graphdef, optimizer, compute_dtype=FLAGS.dtype)
    compiled = jax.jit(step).lower(state, batch).compile()
    return compiled, (state, batch), config


def attention_pairs(label: str, length: int) -> int:
    """Query-key pairs (or, for linear variants, query-feature pairs) one head scores."""
    name, options, _ = VARIANTS[label]
    if name in ("local", "block_local"):
        band = (
            Band(window=options["window"])
            if name == "local"
            else Band(block=options["block_size"], neighbours=options["neighbours"])
        )
        return int(band.dense(length, length).sum())
    if name == "performer":
        return length * options["num_features"]
    if name == "linear":
        return length * FLAGS.head_dim
    return length * length


def train_step_flops(label: str, state, config, batch_size: int, length: int) -> float:
    """Useful FLOPs of one train step, counted by hand: XLA's cost analysis counts a loop's body
    once, so it cannot count the kernel's or the scans' work. 6 per matmul parameter and token
    (forward + backward), plus 12 per head dimension and scored pair (two matmuls forward, four
    backward; the kernel's recomputation not counted)."""
    matmul_params = sum(
        leaf.size
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        if "kernel" in jax.tree_util.keystr(path)
        and leaf.ndim >= 2
        and "opt" not in jax.tree_util.keystr(path)
    )
    model = config.model
    attention = 12 * batch_size * model.num_layers * model.qkv_dim * attention_pairs(label, length)
    return 6 * matmul_params * batch_size * length + attention


def train_step_row(label: str, length: int, peak_flops: float, budget: float) -> Row:
    """One optimizer step of the ListOps base model (emb 512, 8 heads, 4 layers, dropout 0.1 on
    activations and attention weights) at `length`: timed at --train_batch (one warm-up call, then
    the median of --train_repeats; a single timing varied by 25% on the CPU), and compiled at
    --fit_batch for the memory the published batch needs."""
    row = Row("train_step", label, length, FLAGS.train_batch)
    compiled, args, config = _listops_step(label, length, FLAGS.train_batch)
    if FLAGS.fit_batch != FLAGS.train_batch:
        fit, _, _ = _listops_step(label, length, FLAGS.fit_batch)
    else:
        fit = compiled
    row.fit_bytes = compiled_bytes(fit)
    row.compiled_bytes = compiled_bytes(compiled)
    if row.compiled_bytes > budget:
        row.status = f"skipped: needs {row.compiled_bytes / 2**30:.1f} GiB"
        return row
    row.seconds, row.rss_bytes = time_compiled(compiled, args, FLAGS.train_repeats)
    row.tokens_per_second = row.batch * length / row.seconds
    row.flops = train_step_flops(label, args[0], config, row.batch, length)
    row.flop_utilisation = row.flops / row.seconds / peak_flops
    return row


def memory_budget() -> float:
    """Bytes a program may need and still be run: --memory_fraction of the device's memory (an
    accelerator's own, else the host's RAM)."""
    stats = jax.devices()[0].memory_stats() or {}
    total = stats.get("bytes_limit") or psutil.virtual_memory().total
    return FLAGS.memory_fraction * total


def add_ratios(rows: list[Row]) -> None:
    """time_vs_dense and memory_vs_dense: each row against dense full attention, same kind and N
    (memory also where dense was compiled but not timed)."""
    dense = {(r.kind, r.length): r for r in rows if r.variant == "dense"}
    for row in rows:
        reference = dense.get((row.kind, row.length))
        if reference is None:
            continue
        row.memory_vs_dense = row.compiled_bytes / reference.compiled_bytes
        if reference.status == "ok" and row.status == "ok":
            row.time_vs_dense = row.seconds / reference.seconds


def write_csv(rows: list[Row], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=[f.name for f in dataclasses.fields(Row)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)


def write_plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 5))
    layer_rows = [r for r in rows if r.kind == "layer"]
    for label in dict.fromkeys(r.variant for r in layer_rows):
        mine = sorted((r for r in layer_rows if r.variant == label), key=lambda r: r.length)
        timed = [r for r in mine if r.status == "ok"]
        time_axis.plot([r.length for r in timed], [r.seconds for r in timed], marker="o",
                       label=label)  # fmt: skip
        memory_axis.plot([r.length for r in mine], [r.compiled_bytes / 2**20 for r in mine],
                         marker="o", label=label)  # fmt: skip
    for axis, ylabel in ((time_axis, "seconds (forward + backward)"),
                         (memory_axis, "compiled peak memory (MiB)")):  # fmt: skip
        axis.set(xscale="log", yscale="log", xlabel="sequence length", ylabel=ylabel)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=8)
    figure.suptitle(
        f"one attention layer, batch {FLAGS.batch}, {FLAGS.heads} heads x {FLAGS.head_dim}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def targets(rows: list[Row], platform: str) -> list[tuple[str, str, bool | None]]:
    """The issues' targets for `platform` as (target, measured, met); met is None when not
    measured: issue 11's on a CPU, issue 21's on a GPU or TPU."""
    if platform in REFERENCE:
        return accelerator_targets(rows, REFERENCE[platform])
    return cpu_targets(rows)


class Measured:
    """Reads a run's rows: `get(variant, length, field)` of a layer row (NaN where it is missing
    or untimed), and `check` builds a target's (target, measured, met) triple."""

    def __init__(self, rows: list[Row]):
        self.layer = {(r.variant, r.length): r for r in rows if r.kind == "layer"}
        self.lengths = sorted({n for (_, n) in self.layer})

    def get(self, variant: str, length: int, field: str):
        row = self.layer.get((variant, length))
        return getattr(row, field) if row else float("nan")

    @staticmethod
    def check(description: str, measured: str, ok) -> tuple[str, str, bool | None]:
        return (description, measured, None if "nan" in measured else bool(ok))


def accelerator_targets(rows: list[Row], reference: str) -> list[tuple[str, str, bool | None]]:
    """Issue 21's targets on a GPU or TPU, each against the platform's own full attention
    (`reference`) in the same run: every softmax variant, with and without attention dropout,
    within 1.5x of it at 4K and 16K; local and block-local >= 10x faster than `full` at 16K; the
    ListOps base step (attention dropout included) >= 30% of the matmul peak."""
    measured, out = Measured(rows), []
    for label in (*SOFTMAX, *(f"{name}_dropout" for name in SOFTMAX)):
        ratios = [measured.get(label, n, "seconds") / measured.get(reference, n, "seconds")
                  for n in (4096, 16384)]  # fmt: skip
        out.append(measured.check(f"{label}: <= 1.5x {reference} full attention's time, 4K, 16K",
                                  ", ".join(f"{r:.2f}x" for r in ratios),
                                  max(ratios) <= 1.5))  # fmt: skip
    for variant in ("local", "block_local"):
        speed = measured.get("full", 16384, "seconds") / measured.get(variant, 16384, "seconds")
        out.append(measured.check(f"{variant} (128) at 16K: >= 10x faster than full",
                                  f"{speed:.1f}x", speed >= 10))  # fmt: skip
    for r in (r for r in rows if r.kind == "train_step"):
        out.append(measured.check(f"ListOps base step, {r.variant} (batch {r.batch}): >= 30% of "
                                  f"the {FLAGS.dtype} matmul peak", f"{r.flop_utilisation:.0%}",
                                  r.flop_utilisation >= 0.3))  # fmt: skip
    return out


def cpu_targets(rows: list[Row]) -> list[tuple[str, str, bool | None]]:
    """Issue 11's targets on the project's CPU machine (and issue 21's CPU ones)."""
    measured = Measured(rows)
    get, check, lengths = measured.get, measured.check, measured.lengths

    def per_token_drift(variant):
        timed = [n for n in lengths if get(variant, n, "status") == "ok"]
        if len(timed) < 2:
            return float("nan"), "nan"
        first, last = timed[0], timed[-1]
        drift = (get(variant, last, "seconds") / last) / (get(variant, first, "seconds") / first)
        return drift, f"{first // 1024}K-{last // 1024}K"

    out = []
    ratios = [get("dense", n, "seconds") / get("xla_reference", n, "seconds")
              for n in (1024, 2048, 4096)]  # fmt: skip
    out.append(check("dense full no slower than jax.nn.dot_product_attention, 1K-4K",
                     ", ".join(f"{r:.2f}x" for r in ratios), max(ratios) <= 1.0))  # fmt: skip
    utilisation = get("full", 4096, "flop_utilisation")
    out.append(check("exact full attention at 4K, default options: >= 60% of matmul throughput",
                     f"{utilisation:.0%}", utilisation >= 0.6))  # fmt: skip
    cost = get("full_dropout", 4096, "seconds") / get("full", 4096, "seconds")
    out.append(check("attention dropout 0.1 on full attention at 4K: <= 1.25x its time without",
                     f"{cost:.2f}x", cost <= 1.25))  # fmt: skip
    for variant in ("local", "block_local"):
        speed = 1 / get(variant, 4096, "time_vs_dense")
        memory = get(variant, 4096, "memory_vs_dense")
        ok = speed >= 10 and memory <= 0.1
        out.append(check(f"{variant} (128) at 4K: >= 10x faster than dense, <= 0.1x its memory",
                         f"{speed:.1f}x, {memory:.3f}x", ok))  # fmt: skip
        drift, span = per_token_drift(variant)
        out.append(check(f"{variant} time per token flat (within 25%), {span}",
                         f"x{drift:.2f}", 0.75 <= drift <= 1.25))  # fmt: skip
    for variant in POSITION_VARIANTS:
        ratio = get(variant, 4096, "seconds") / get("full", 4096, "seconds")
        longest = max((n for n in lengths if (variant, n) in measured.layer), default=4096)
        growth = get(variant, longest, "compiled_bytes") / get(variant, 4096, "compiled_bytes")
        linear = growth <= 1.25 * longest / 4096
        out.append(check(f"{variant} at 4K <= 1.3x full on the same kernel; memory linear to "
                         f"{longest // 1024}K",
                         f"{ratio:.2f}x; memory x{growth:.1f} for x{longest // 4096} length",
                         ratio <= 1.3 and linear))  # fmt: skip
    for variant in ("linear", "performer"):
        speed = 1 / get(variant, 4096, "time_vs_dense")
        drift, span = per_token_drift(variant)
        out.append(check(f"{variant} at 4K >= 6x faster than dense; time per token flat {span}",
                         f"{speed:.1f}x; x{drift:.2f}", speed >= 6 and drift <= 1.25))  # fmt: skip
    memory = get("performer", 4096, "compiled_bytes") / get("linear", 4096, "compiled_bytes")
    out.append(check("performer (256 features) at 4K: <= 1.5x linear's memory",
                     f"{memory:.2f}x", memory <= 1.5))  # fmt: skip
    causal = {(r.variant, r.length): r.seconds for r in rows if r.kind == "causal_layer"}
    ratio = causal.get(("performer", 64), float("nan")) / causal.get(("linear", 64), float("nan"))
    out.append(check("causal performer at 64 tokens: <= 1.5x causal linear's time",
                     f"{ratio:.2f}x", ratio <= 1.5))  # fmt: skip
    steps = [r for r in rows if r.kind == "train_step"]
    for r in steps:
        fits = r.fit_bytes <= MACHINE_MEMORY_GIB * 2**30
        out.append(check(f"ListOps base step, {r.variant}: batch {FLAGS.fit_batch} fits "
                         f"{MACHINE_MEMORY_GIB} GiB; >= 40% of matmul throughput",
                         f"{r.fit_bytes / 2**30:.1f} GiB; {r.flop_utilisation:.0%}",
                         fits and r.flop_utilisation >= 0.4))  # fmt: skip
    return out


def length_label(length: int) -> str:
    """4096 -> "4K"; lengths below 1K as they are."""
    return f"{length // 1024}K" if length >= 1024 else str(length)


def write_markdown(
    rows: list[Row], path: str, platform: str, peak_flops: float, seconds: float
) -> None:
    layer = {(r.variant, r.length): r for r in rows if r.kind == "layer"}
    variants = list(dict.fromkeys(r.variant for r in rows if r.kind == "layer"))
    table_lengths = sorted({n for (_, n) in layer if n <= FLAGS.max_timed_quadratic_length})
    reference = REFERENCE.get(platform, "dense")
    at = 4096 if platform == "cpu" else max(table_lengths, default=4096)

    def cell(variant, length, value):
        row = layer.get((variant, length))
        return value(row) if row and row.status == "ok" else "-"

    def speedup(row):
        base = layer.get((reference, at))
        return f"{base.seconds / row.seconds:.1f}x" if base and base.status == "ok" else "-"

    head = " | ".join(length_label(n) for n in table_lengths)
    sizes = ", ".join(f"{n}²" for n in FLAGS.peak_sizes)
    device = jax.devices()[0]
    lines = [
        "# Attention benchmark",
        "",
        f"Machine: {os.cpu_count()} CPU cores, JAX {jax.__version__} on {device.platform} "
        f"({device.device_kind}); {FLAGS.dtype} matmul peak "
        f"{peak_flops / 1e9:.1f} GFLOP/s (the best run of {sizes}). "
        f"One attention layer (projections included) in {FLAGS.dtype}, forward "
        f"plus backward, batch {FLAGS.batch}, {FLAGS.heads} heads of width {FLAGS.head_dim}; "
        f"median of {FLAGS.repeats}. The whole run took {seconds / 60:.1f} minutes.",
        "",
        f"## Steps per second (speed-up over {reference} full attention at {length_label(at)})",
        "",
        f"| variant | {head} | speed-up at {length_label(at)} |",
        "|---|" + "---|" * (len(table_lengths) + 1),
    ]
    for variant in variants:
        cells = [cell(variant, n, lambda r: f"{1 / r.seconds:.2f}") for n in table_lengths]
        lines.append(f"| {variant} | {' | '.join(cells)} | {cell(variant, at, speedup)} |")
    memory_lengths = sorted({r.length for r in rows if r.kind == "layer"})
    memory_head = " | ".join(length_label(n) for n in memory_lengths)
    lines += [
        "",
        "## Peak memory (compiled program, GiB; also for programs too large to run)",
        "",
        f"| variant | {memory_head} |",
        "|---|" + "---|" * len(memory_lengths),
    ]
    for variant in variants:
        cells = [
            f"{layer[(variant, n)].compiled_bytes / 2**30:.2f}" if (variant, n) in layer else "-"
            for n in memory_lengths
        ]
        lines.append(f"| {variant} | {' | '.join(cells)} |")
    train = [r for r in rows if r.kind == "train_step"]
    if train:
        header = (
            "| variant | length | batch | seconds | tokens/s | FLOP utilisation | memory GiB | "
            f"memory GiB at batch {FLAGS.fit_batch} |"
        )
        lines += ["", "## ListOps base model, one train step", "", header, "|---" * 8 + "|"]
        for r in train:
            fit = f"{r.fit_bytes / 2**30:.2f}"
            if r.status != "ok":
                lines.append(f"| {r.variant} | {r.length} | {r.batch} | {r.status} | | | | {fit} |")
                continue
            lines.append(
                f"| {r.variant} | {r.length} | {r.batch} | {r.seconds:.2f} | "
                f"{r.tokens_per_second:.0f} | {r.flop_utilisation:.0%} | "
                f"{r.compiled_bytes / 2**30:.2f} | {fit} |"
            )
    causal = [r for r in rows if r.kind == "causal_layer"]
    if causal:
        lines += ["", f"## Causal, short sequences (batch {FLAGS.causal_batch})", "",
                  "| variant | length | milliseconds | status |", "|---|---|---|---|"]  # fmt: skip
        for r in causal:
            lines.append(f"| {r.variant} | {r.length} | {r.seconds * 1e3:.1f} | {r.status} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for description, measured, met in targets(rows, platform):
        verdict = {True: "yes", False: "**no**", None: "not measured"}[met]
        lines.append(f"| {description} | {measured} | {verdict} |")
    skipped = [r for r in rows if r.status != "ok"]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{r.variant} at {r.length} ({r.status})"
                                               for r in skipped) + "."]  # fmt: skip
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def check_flags(platform: str, labels: list[str]) -> None:
    """One error line for a variant this bench does not know or this platform cannot run, before
    anything is compiled or written."""
    for flag, chosen, valid in (
        ("variants", labels, VARIANTS),
        ("causal_variants", FLAGS.causal_variants, VARIANTS),
        ("train_variants", FLAGS.train_variants, ATTENTION),
    ):
        unknown = sorted(set(chosen) - set(valid))
        if unknown:
            fail(f"unknown --{flag} {unknown}; valid: {', '.join(valid)}")
    elsewhere = sorted(set(labels) & set(GPU_ONLY)) if platform != "gpu" else []
    if elsewhere:
        fail(f"--variants {elsewhere} run on a GPU only; this is {platform}")


def guarded(measure, kind: str, label: str, length: int, batch: int) -> Row:
    """measure()'s row, or one whose status names the error (its traceback on stderr): a variant
    that fails where it has never run (a kernel a compiler refuses) does not lose the others."""
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - reported in the row and on stderr, then exit 1
        traceback.print_exc()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Row(kind, label, length, batch, status=f"error: {type(error).__name__} {reason}")


def main(argv) -> None:
    del argv
    started = time.perf_counter()
    platform = jax.default_backend()
    apply_platform_defaults(platform)
    labels = FLAGS.variants or CPU_LABELS
    check_flags(platform, labels)
    os.makedirs(FLAGS.out, exist_ok=True)
    budget = memory_budget()
    peak_sizes = tuple(int(n) for n in FLAGS.peak_sizes)
    peak_flops = matmul_flops_per_second(peak_sizes, FLAGS.dtype)
    sizes = ", ".join(f"{n}²" for n in peak_sizes)
    print(
        f"{platform}: matmul peak {peak_flops / 1e9:.1f} GFLOP/s ({FLAGS.dtype}, the best run "
        f"of {sizes}); writing to {FLAGS.out}",
        flush=True,
    )
    rows = []
    for label in labels:
        lengths = [int(n) for n in FLAGS.lengths]
        if label not in QUADRATIC_MEMORY:
            lengths += [int(n) for n in FLAGS.long_lengths]
        for length in lengths:
            measure = functools.partial(layer_row, label, length, peak_flops, budget)
            row = guarded(measure, "layer", label, length, FLAGS.batch)
            rows.append(row)
            print(f"layer {label:14s} N={length:6d} {row.seconds:9.4f}s "
                  f"{row.compiled_bytes / 2**20:10.1f} MiB {row.status}", flush=True)  # fmt: skip
    for label in FLAGS.causal_variants:
        for length in (int(n) for n in FLAGS.causal_lengths):
            measure = functools.partial(layer_row, label, length, peak_flops, budget, causal=True)
            row = guarded(measure, "causal_layer", label, length, FLAGS.causal_batch)
            rows.append(row)
            print(f"causal {label:13s} N={length:6d} {row.seconds:9.4f}s {row.status}", flush=True)
    for label in FLAGS.train_variants:
        for length in (int(n) for n in FLAGS.train_lengths):
            measure = functools.partial(train_step_row, label, length, peak_flops, budget)
            row = guarded(measure, "train_step", label, length, FLAGS.train_batch)
            rows.append(row)
            print(f"train {label:14s} N={length:6d} {row.seconds:9.3f}s "
                  f"utilisation {row.flop_utilisation:.0%} {row.status}", flush=True)  # fmt: skip
    add_ratios(rows)
    write_csv(rows, os.path.join(FLAGS.out, "bench.csv"))
    write_plot(rows, os.path.join(FLAGS.out, "bench.png"))
    write_markdown(rows, os.path.join(FLAGS.out, "bench.md"), platform, peak_flops,
                   time.perf_counter() - started)  # fmt: skip
    print(f"wrote bench.csv, bench.png and bench.md to {FLAGS.out}")
    failed = [f"{r.variant} at {r.length}" for r in rows if r.status.startswith("error")]
    if failed:
        fail(f"{len(failed)} row(s) failed ({', '.join(failed)}); see the tracebacks above",
             EXIT_FAILED)  # fmt: skip


if __name__ == "__main__":
    app.run(main)
