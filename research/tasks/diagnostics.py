"""Diagnostic tasks generated locally, both with a target at many positions (per-position labels).

Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"): `num_pairs` key-value pairs
with distinct keys, then each key queried once at a later position; the target at a query position
is the value paired with its key, every other position has no target. The value never appears at
the query, so even bidirectional attention cannot copy it: the model must find the earlier key and
read the token after it (an induction step). Tokens: 0 padding, 1 filler, 2.. keys, then values;
targets are value indices (0 .. MAX_VALUES - 1).

Distance: `length` random symbols (1 .. num_symbols); at every position t >= `distance` the target
is 1 exactly when the symbol at t equals the one at t - distance (balanced 50/50 at each position;
no target before). Every target needs the one position `distance` back, so a model whose receptive
field (layers x window for local attention) is shorter than the distance stays at chance, and one
that reaches it can be perfect.

Labels are stored as one int8 per position, -1 where there is no target (the trainer gives those
zero weight). Both are TFDS builders (array_record) like every other task; generation is chunked
and deterministic for a seed (research.tasks.parallel_generation).
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError, check_choice
from research.tasks import common, parallel_generation

NO_TARGET = -1
FILLER = 1
MAX_KEYS = 64
MAX_VALUES = 64
FIRST_KEY = 2
FIRST_VALUE = FIRST_KEY + MAX_KEYS
RECALL_VOCAB_SIZE = FIRST_VALUE + MAX_VALUES
MAX_SYMBOLS = 16
DISTANCE_VOCAB_SIZE = MAX_SYMBOLS + 1
QUERY_PLACEMENTS = ("random", "adjacent")


@dataclasses.dataclass(frozen=True)
class RecallOptions:
    """MQAR: `num_pairs` pairs from `num_keys` keys and `num_values` values in `length` tokens.

    Keys and values are distinct within an example, as in Zoology. queries: "random" puts the
    queries at distinct positions drawn uniformly after the pairs (Zoology spreads them over the
    rest of the sequence, with a power law favouring early ones), "adjacent" right after the pairs.
    """

    num_pairs: int = 8
    num_keys: int = 64
    num_values: int = 64
    length: int = 64
    queries: str = "random"
    num_train: int = 20_000
    num_val: int = 1_000
    num_test: int = 1_000
    seed: int = 0

    def check(self, field: str) -> None:
        common.check_counts(self, field)
        check_choice(f"{field}.queries", self.queries, QUERY_PLACEMENTS)
        if self.num_keys > MAX_KEYS or self.num_values > MAX_VALUES:
            raise UserError(
                f"{field}.num_keys and num_values must be at most {MAX_KEYS} and {MAX_VALUES}"
            )
        if not 1 <= self.num_pairs <= min(self.num_keys, self.num_values):
            raise UserError(
                f"{field}.num_pairs={self.num_pairs} must lie in 1..min(num_keys="
                f"{self.num_keys}, num_values={self.num_values}) (keys and values are distinct)"
            )
        if self.length < 3 * self.num_pairs:
            raise UserError(
                f"{field}.length={self.length} is shorter than 3 * num_pairs = "
                f"{3 * self.num_pairs} (the pairs, then one query per key)"
            )


def recall_token_label(token: int) -> str:
    """ "." for filler, k<i> for key i, v<j> for value j."""
    if token == FILLER:
        return "."
    return f"k{token - FIRST_KEY}" if token < FIRST_VALUE else f"v{token - FIRST_VALUE}"


def make_recall_chunk(
    options: RecallOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` MQAR examples: (tokens_T uint8, targets_T int8 with NO_TARGET off the queries)."""
    rng = np.random.default_rng(seed_sequence)
    pairs, length = options.num_pairs, options.length
    examples = []
    for _ in range(count):
        keys = rng.choice(options.num_keys, pairs, replace=False)
        values = rng.choice(options.num_values, pairs, replace=False)
        tokens = np.full(length, FILLER, np.uint8)
        targets = np.full(length, NO_TARGET, np.int8)
        tokens[0 : 2 * pairs : 2] = FIRST_KEY + keys
        tokens[1 : 2 * pairs : 2] = FIRST_VALUE + values
        if options.queries == "random":
            where = np.sort(rng.choice(np.arange(2 * pairs, length), pairs, replace=False))
        else:
            where = np.arange(2 * pairs, 3 * pairs)
        order = rng.permutation(pairs)
        tokens[where] = FIRST_KEY + keys[order]
        targets[where] = values[order]
        examples.append((tokens, targets))
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
class DiagnosticConfig(tfds.core.BuilderConfig):
    options: object = None


def _builder_config(task_options, options_class, prefix: str) -> DiagnosticConfig:
    parsed = common.parse_options(options_class, task_options)
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
    """A generated diagnostic: uint8 tokens, int8 per-position targets; `make_chunk` draws them."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"2.0.0": "targets at every position (MQAR; distance at every position)"}
    BUILDER_CONFIGS = []
    NUM_CLASSES = 2
    make_chunk = None

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(
            self, num_classes=self.NUM_CLASSES, per_position_labels=True
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


class Recall(_Generated):
    """Multi-query associative recall: the target at each query is the value paired with its key."""

    name = "lra_recall"
    NUM_CLASSES = MAX_VALUES
    make_chunk = staticmethod(make_recall_chunk)


class Distance(_Generated):
    """At each position t >= distance: is the symbol at t the one at t - distance?"""

    name = "lra_distance"
    NUM_CLASSES = 2
    make_chunk = staticmethod(make_distance_chunk)


RECALL_TASK = common.Task(
    name="recall",
    builder_class=Recall,
    builder_config=recall_builder_config,
    default_options=lambda: dataclasses.asdict(RecallOptions()),
    vocab_size=RECALL_VOCAB_SIZE,
    num_classes=MAX_VALUES,
    per_position=True,
    token_label=recall_token_label,
)
DISTANCE_TASK = common.Task(
    name="distance",
    builder_class=Distance,
    builder_config=distance_builder_config,
    default_options=lambda: dataclasses.asdict(DistanceOptions()),
    vocab_size=DISTANCE_VOCAB_SIZE,
    num_classes=2,
    per_position=True,
)
