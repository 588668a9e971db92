"""Diagnostic tasks generated locally: associative recall, and a dependency at a chosen distance.

Recall (multi-query associative recall, Arora et al. 2023, one query per example): `num_pairs`
key-value pairs with distinct keys and distinct values, filler up to `length`, then a query key;
the label is the value paired with it. Tokens: 0 padding, 1 filler, 2.. keys, then values; the label
is the value's index (0 .. MAX_VALUES - 1). A model that finds the pairs but not the right one sits
at 1 / num_pairs accuracy.

Distance: `length` random symbols (1 .. num_symbols); the label is 1 exactly when the symbols at
positions 0 and `distance` are equal (balanced 50/50). With CLS pooling the decision is read at the
CLS position in front of position 0, so a local window of w positions (one layer) can see both
symbols only when the distance fits in it: accuracy stays at chance once the distance exceeds the
model's receptive field (layers x window).

Both are TFDS builders (array_record) like every other task; generation is chunked and
deterministic for a seed (research.tasks.parallel_generation).
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError
from research.tasks import common, parallel_generation

FILLER = 1
MAX_KEYS = 64
MAX_VALUES = 64
FIRST_KEY = 2
FIRST_VALUE = FIRST_KEY + MAX_KEYS
RECALL_VOCAB_SIZE = FIRST_VALUE + MAX_VALUES
MAX_SYMBOLS = 16
DISTANCE_VOCAB_SIZE = MAX_SYMBOLS + 1
SPLIT_STREAMS = ("train", "validation", "test")


def _check_ints(options) -> None:
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"config.task_options.{field.name}={value!r} must be an integer >= 0")
    for field in ("num_train", "num_val", "num_test"):
        if getattr(options, field) < 1:
            raise UserError(
                f"config.task_options.{field}=0: every split needs at least one example"
            )


@dataclasses.dataclass(frozen=True)
class RecallOptions:
    num_pairs: int = 8
    num_keys: int = 16
    num_values: int = 16
    length: int = 64
    num_train: int = 20_000
    num_val: int = 1_000
    num_test: int = 1_000
    seed: int = 0

    def validate(self) -> None:
        _check_ints(self)
        if not 1 <= self.num_pairs <= min(self.num_keys, self.num_values):
            raise UserError(
                f"config.task_options.num_pairs={self.num_pairs} must lie in 1..min(num_keys="
                f"{self.num_keys}, num_values={self.num_values}) (keys and values are distinct)"
            )
        if self.num_keys > MAX_KEYS or self.num_values > MAX_VALUES:
            raise UserError(
                f"config.task_options.num_keys and num_values must be at most {MAX_KEYS} and "
                f"{MAX_VALUES}"
            )
        if self.length < 2 * self.num_pairs + 1:
            raise UserError(
                f"config.task_options.length={self.length} is shorter than 2 * num_pairs + 1 = "
                f"{2 * self.num_pairs + 1}"
            )


def make_recall_chunk(
    options: RecallOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed_sequence)
    examples = []
    for _ in range(count):
        keys = rng.choice(options.num_keys, options.num_pairs, replace=False)
        values = rng.choice(options.num_values, options.num_pairs, replace=False)
        tokens = np.full(options.length, FILLER, np.uint8)
        tokens[0 : 2 * options.num_pairs : 2] = FIRST_KEY + keys
        tokens[1 : 2 * options.num_pairs : 2] = FIRST_VALUE + values
        query = rng.integers(options.num_pairs)
        tokens[-1] = FIRST_KEY + keys[query]
        examples.append((tokens, int(values[query])))
    return examples


@dataclasses.dataclass(frozen=True)
class DistanceOptions:
    length: int = 256
    distance: int = 64
    num_symbols: int = 4
    num_train: int = 20_000
    num_val: int = 1_000
    num_test: int = 1_000
    seed: int = 0

    def validate(self) -> None:
        _check_ints(self)
        if not 1 <= self.distance < self.length:
            raise UserError(
                f"config.task_options.distance={self.distance} must lie in 1..length-1 "
                f"(length={self.length})"
            )
        if not 2 <= self.num_symbols <= MAX_SYMBOLS:
            raise UserError(
                f"config.task_options.num_symbols={self.num_symbols} must lie in 2..{MAX_SYMBOLS}"
            )


def make_distance_chunk(
    options: DistanceOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed_sequence)
    symbols = options.num_symbols
    tokens_NL = rng.integers(1, symbols + 1, (count, options.length)).astype(np.uint8)
    labels_N = rng.integers(2, size=count)
    # Label 1: copy the first symbol; label 0: shift it by 1..symbols-1 so it differs.
    shift_N = np.where(labels_N == 1, 0, rng.integers(1, symbols, size=count))
    tokens_NL[:, options.distance] = (tokens_NL[:, 0] - 1 + shift_N) % symbols + 1
    return [(tokens, int(label)) for tokens, label in zip(tokens_NL, labels_N, strict=True)]


@dataclasses.dataclass
class DiagnosticConfig(tfds.core.BuilderConfig):
    options: object = None


def _builder_config(task_options, options_class, prefix: str) -> DiagnosticConfig:
    options = dict(task_options)
    known = {field.name for field in dataclasses.fields(options_class)}
    common.check_known_fields(options, known)
    parsed = options_class(**options)
    parsed.validate()
    name = "_".join(
        [prefix]
        + [
            f"{f.name.replace('_', '')}{getattr(parsed, f.name)}"
            for f in dataclasses.fields(parsed)
        ]
    )
    return DiagnosticConfig(name=name, options=parsed)


def recall_builder_config(task_options) -> DiagnosticConfig:
    return _builder_config(task_options, RecallOptions, "recall")


def distance_builder_config(task_options) -> DiagnosticConfig:
    return _builder_config(task_options, DistanceOptions, "distance")


class _Generated(tfds.core.GeneratorBasedBuilder):
    """A generated diagnostic: uint8 tokens and a label; `make_chunk` draws the examples."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []
    NUM_CLASSES = 2
    make_chunk = None

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(self, num_classes=self.NUM_CLASSES)

    def _split_generators(self, dl_manager):
        options = self.builder_config.options
        self.info.metadata["max_length"] = options.length
        sizes = (options.num_train, options.num_val, options.num_test)
        return {
            split: self._generate_examples(options, stream, size)
            for stream, (split, size) in enumerate(zip(SPLIT_STREAMS, sizes, strict=True))
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


class Recall(_Generated):
    """Multi-query associative recall, one query per example; the label is the recalled value."""

    name = "lra_recall"
    NUM_CLASSES = MAX_VALUES
    make_chunk = staticmethod(make_recall_chunk)


class Distance(_Generated):
    """Are the symbols at positions 0 and `distance` equal?"""

    name = "lra_distance"
    NUM_CLASSES = 2
    make_chunk = staticmethod(make_distance_chunk)
