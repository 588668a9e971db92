"""Generated diagnostics with a target at many positions (per-position labels): the builder they
share (`GeneratedPerPosition`), and the distance task. MQAR (Zoology's multi-query associative
recall) is research/tasks/recall.py, built on the same builder.

Distance: `length` random symbols (1 .. num_symbols); at every position t >= `distance` the target
is 1 exactly when the symbol at t equals the one at t - distance (balanced 50/50 at each position;
no target before). Every target needs the one position `distance` back, so a model whose receptive
field (layers x window for local attention) is shorter than the distance stays at chance, and one
that reaches it can be perfect.

Labels are stored as one integer per position, -1 where there is no target (the trainer gives
those zero weight). Both are TFDS builders (array_record) like every other task; generation is
chunked and deterministic for a seed (research.tasks.parallel_generation).
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError
from research.tasks import common, parallel_generation

NO_TARGET = -1
MAX_SYMBOLS = 16
DISTANCE_VOCAB_SIZE = MAX_SYMBOLS + 1


@dataclasses.dataclass(frozen=True)
class DistanceOptions:
    length: int = 256
    distance: int = 64
    num_symbols: int = 4
    num_train: int = 20_000
    num_val: int = 1_000
    num_test: int = 1_000
    seed: int = 0

    def check(self, field: str) -> None:
        common.check_counts(self, field)
        if not 1 <= self.distance < self.length:
            raise UserError(
                f"{field}.distance={self.distance} must lie in 1..length-1 (length={self.length})"
            )
        if not 2 <= self.num_symbols <= MAX_SYMBOLS:
            raise UserError(f"{field}.num_symbols={self.num_symbols} must lie in 2..{MAX_SYMBOLS}")


def make_distance_chunk(
    options: DistanceOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` examples: (tokens_T uint8, targets_T int8: [x_t == x_{t-d}] for t >= d, else -1).

    Left to right, each symbol from `distance` on copies the one `distance` back (target 1) or
    shifts it by 1..num_symbols-1 (target 0), with probability 1/2 each.
    """
    rng = np.random.default_rng(seed_sequence)
    symbols, d, length = options.num_symbols, options.distance, options.length
    tokens_NL = rng.integers(0, symbols, (count, length))
    targets_NL = np.full((count, length), NO_TARGET, np.int8)
    targets_NL[:, d:] = rng.integers(2, size=(count, length - d))
    shift_NL = np.where(targets_NL == 1, 0, rng.integers(1, symbols, size=(count, length)))
    for t in range(d, length):
        tokens_NL[:, t] = (tokens_NL[:, t - d] + shift_NL[:, t]) % symbols
    tokens_NL = (tokens_NL + 1).astype(np.uint8)
    return list(zip(tokens_NL, targets_NL, strict=True))


@dataclasses.dataclass
class GeneratedConfig(tfds.core.BuilderConfig):
    options: object = None


def generated_builder_config(task_options, options_class, prefix: str) -> GeneratedConfig:
    """The options parsed and checked, and a dataset folder named by every one of them."""
    parsed = common.parse_options(options_class, task_options)
    name = "_".join(
        [prefix]
        + [
            f"{f.name.replace('_', '')}{folder_text(getattr(parsed, f.name))}"
            for f in dataclasses.fields(parsed)
        ]
    )
    return GeneratedConfig(name=name, options=parsed)


def folder_text(value) -> str:
    """An option's value in a folder name: a tuple of tuples ((64, 4), (128, 8)) as 64x4-128x8."""
    if isinstance(value, tuple):
        return "-".join(
            "x".join(map(str, item)) if isinstance(item, tuple) else str(item) for item in value
        )
    return str(value)


def distance_builder_config(task_options) -> GeneratedConfig:
    return generated_builder_config(task_options, DistanceOptions, "distance")


class GeneratedPerPosition(tfds.core.GeneratorBasedBuilder):
    """A generated task with a target per position: `make_chunk(options, seed_sequence, count)`
    draws (tokens_T, targets_T) pairs, stored as TOKEN_DTYPE and LABEL_DTYPE."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"2.0.0": "distance targets at every position"}
    BUILDER_CONFIGS = []
    TOKEN_DTYPE = np.uint8
    LABEL_DTYPE = np.int8
    make_chunk = None

    def num_classes(self) -> int:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(
            self,
            num_classes=self.num_classes(),
            per_position_labels=True,
            token_dtype=self.TOKEN_DTYPE,
            label_dtype=self.LABEL_DTYPE,
        )

    def _split_generators(self, dl_manager):
        options = self.builder_config.options
        self.info.metadata["max_length"] = options.length
        return {
            split: self._generate_examples(options, stream, size)
            for stream, (split, size) in enumerate(common.split_sizes(options).items())
        }

    def _generate_examples(self, options, stream: int, size: int) -> Iterator:
        examples = parallel_generation.generate(
            type(self).make_chunk,
            options,
            total=size,
            seed=options.seed,
            stream=stream,
            chunk_size=10_000,
            num_workers=1,
        )
        for index, (tokens, label) in enumerate(examples):
            yield index, {"tokens": tokens, "label": label}


class Distance(GeneratedPerPosition):
    """At each position t >= distance: is the symbol at t the one at t - distance?"""

    name = "lra_distance"
    make_chunk = staticmethod(make_distance_chunk)

    def num_classes(self) -> int:
        return 2


DISTANCE_TASK = common.Task(
    name="distance",
    builder_class=Distance,
    builder_config=distance_builder_config,
    default_options=lambda: dataclasses.asdict(DistanceOptions()),
    vocab_size=DISTANCE_VOCAB_SIZE,
    num_classes=2,
    per_position=True,
)
