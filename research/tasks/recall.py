"""Multi-query associative recall (MQAR) exactly as Zoology defines it (Arora et al. 2023,
`zoology/data/associative_recall.py`, `multiquery_ar`).

An example of `length` tokens from a vocabulary of `vocab_size`: `num_pairs` key-value pairs first
(keys drawn without replacement from the lower half of the vocabulary, 1 .. V/2 - 1; values from
the upper half, V/2 .. V - 1), then each key once more as a query, at an even offset after the
pairs. The target at a query is the value paired with its key (as a value index, 0 .. V/2 - 1, so
the tagger's classes are the values); no other position has a target. The value never follows its
query, so even bidirectional attention cannot copy it: the model must find the earlier key.

Query placement (`queries`): "power_law" is Zoology's: the offsets 0, 2, 4, ... after the pairs
are drawn without replacement with probability proportional to a * i^(a - 1) for the i-th offset
(a = `power_a`, 0.01 in every Zoology figure), which favours queries close to the pairs, as
repeated bigrams are in text (a = 1 draws them uniformly); "adjacent" puts the queries right
after the pairs. Every other position is filler (`filler`): the token 0 ("zero", Zoology's
Figure 2, `random_non_queries=False`) or a token drawn uniformly from the whole vocabulary
("random", the generator's default), which may repeat a key or a value as noise.

A training mix (`mix`, as Zoology's multi-segment configs): a tuple of (length, pairs) segments.
Each split then holds equal shares of every segment, each example at its own length (the pipeline
pads it to `length` and masks the padding, so a short example is scored as if alone), and the
test set of each segment is also its own split, `test_<length>x<pairs>`, which the trainer scores
after `test` (results.json: `test_accuracy_by_split`). Empty (the default): every example has
`length` tokens and `num_pairs` pairs.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError, check_choice, check_positive
from research.tasks import common, diagnostics

NO_TARGET = -1
QUERY_PLACEMENTS = ("power_law", "adjacent")
FILLERS = ("zero", "random")
MAX_VOCAB_SIZE = 65_536  # tokens are stored as uint16
MAX_SEGMENTS = 100
# A mix's segment s of split stream k is drawn from stream MIX_STREAM * (k + 1) + s, apart from the
# single-segment streams 0 (train), 1 (validation), 2 (test).
MIX_STREAM = 1_000


@dataclasses.dataclass(frozen=True)
class RecallOptions:
    """MQAR's data: Zoology's Figure 2 defaults (vocabulary 8,192, power law a = 0.01, filler 0,
    100,000 training and 3,000 test sequences) at 8 pairs in 128 tokens; `num_val` sequences
    more for validation, which Zoology does without (it reports the test set's best)."""

    num_pairs: int = 8
    length: int = 128
    vocab_size: int = 8_192
    queries: str = "power_law"
    power_a: float = 0.01
    filler: str = "zero"
    num_train: int = 100_000
    num_val: int = 3_000
    num_test: int = 3_000
    seed: int = 0
    #: (length, pairs) segments of a training mix; () = one segment, (length, num_pairs)
    mix: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        # A config read back from JSON holds lists: the same mix as tuples, so options compare.
        if isinstance(self.mix, list | tuple):
            mix = tuple(tuple(s) if isinstance(s, list | tuple) else s for s in self.mix)
            object.__setattr__(self, "mix", mix)

    def check(self, field: str) -> None:
        """One-line UserErrors naming `<field>.<option>` (field: "config.task_options")."""
        common.check_counts(self, field)
        for name in ("num_pairs", "length", "vocab_size"):
            check_positive(f"{field}.{name}", getattr(self, name))
        check_choice(f"{field}.queries", self.queries, QUERY_PLACEMENTS)
        check_choice(f"{field}.filler", self.filler, FILLERS)
        if not 0 < self.power_a <= 1:
            raise UserError(f"{field}.power_a={self.power_a!r} must lie in (0, 1] (1 = uniform)")
        self.check_mix(f"{field}.mix")
        for segment in self.segments():
            entry = f"{field}.mix entry ({segment.length}, {segment.num_pairs}): "
            segment.check_shape(entry if self.mix else f"{field}.")

    def check_mix(self, field: str) -> None:
        valid = f"give (length, pairs) pairs, e.g. ((64, 4), (128, 8)), at most {MAX_SEGMENTS}"
        if not isinstance(self.mix, tuple) or len(self.mix) > MAX_SEGMENTS:
            raise UserError(f"{field}={self.mix!r} is not valid; {valid}")
        for segment in self.mix:
            if not (isinstance(segment, tuple) and len(segment) == 2):
                raise UserError(f"{field} has {segment!r}; {valid}")
            for value in segment:
                check_positive(f"{field} entry {segment!r}", value)
            if segment[0] > self.length:
                raise UserError(
                    f"{field} has length {segment[0]} > length={self.length}; set length to the "
                    "longest segment's (examples are padded to it)"
                )
        if len(set(self.mix)) < len(self.mix):
            raise UserError(f"{field}={self.mix!r} repeats a segment")
        if self.mix and min(self.num_train, self.num_val, self.num_test) < len(self.mix):
            raise UserError(
                f"{field} has {len(self.mix)} segments: num_train, num_val and num_test must each "
                "be at least that (each split holds every segment)"
            )

    def check_shape(self, prefix: str) -> None:
        """The one-segment checks (`length` and `num_pairs` fit each other and the vocabulary);
        `prefix` starts each message: "config.task_options." or a mix entry's name."""
        if self.length % 2:
            raise UserError(
                f"{prefix}length={self.length} must be even (queries sit at even offsets)"
            )
        if self.length < 4 * self.num_pairs:
            raise UserError(
                f"{prefix}length={self.length} is shorter than 4 * num_pairs = "
                f"{4 * self.num_pairs} (the pairs, then a query and a gap per key)"
            )
        if not 2 * (self.num_pairs + 1) <= self.vocab_size <= MAX_VOCAB_SIZE:
            raise UserError(
                f"{prefix}vocab_size={self.vocab_size} must lie in {2 * (self.num_pairs + 1)}.."
                f"{MAX_VOCAB_SIZE} (num_pairs={self.num_pairs} distinct keys in its lower half, "
                "values in its upper)"
            )

    def segments(self) -> list["RecallOptions"]:
        """One single-segment RecallOptions per (length, pairs) of the mix, or [self]."""
        if not self.mix:
            return [self]
        return [
            dataclasses.replace(self, length=length, num_pairs=pairs, mix=())
            for length, pairs in self.mix
        ]

    @property
    def num_values(self) -> int:
        """The classes of the target: every value token, V/2 .. V - 1."""
        return self.vocab_size - self.vocab_size // 2

    def token_label(self, token: int) -> str:
        """ "." for filler 0, k<i> for key token i, v<j> for value index j (the class)."""
        if token == 0:
            return "."
        half = self.vocab_size // 2
        return f"k{token}" if token < half else f"v{token - half}"


def query_offset_probabilities(space: int, power_a: float) -> np.ndarray:
    """Zoology's power law over the `space` even offsets after the pairs: p_i ∝ a * i^(a - 1)."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def make_recall_chunk(
    options: RecallOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` examples: (tokens_T uint16, targets_T int16: the value index at each query, else
    NO_TARGET), drawn as Zoology's `multiquery_ar` draws them (module docstring)."""
    rng = np.random.default_rng(seed_sequence)
    pairs, length, vocab = options.num_pairs, options.length, options.vocab_size
    half = vocab // 2
    context = 2 * pairs
    space = (length - context) // 2
    if options.queries == "power_law":
        p = query_offset_probabilities(space, options.power_a)
    examples = []
    for _ in range(count):
        keys = rng.choice(np.arange(1, half), pairs, replace=False)
        values = rng.choice(np.arange(half, vocab), pairs, replace=False)
        if options.queries == "power_law":
            offsets = rng.choice(space, pairs, replace=False, p=p)
        else:
            offsets = rng.permutation(pairs)
        if options.filler == "random":
            tokens = rng.integers(0, vocab, length).astype(np.uint16)
        else:
            tokens = np.zeros(length, np.uint16)
        tokens[0:context:2] = keys
        tokens[1:context:2] = values
        where = context + 2 * offsets
        tokens[where] = keys
        targets = np.full(length, NO_TARGET, np.int16)
        targets[where] = values - half
        examples.append((tokens, targets))
    return examples


def recall_builder_config(task_options) -> diagnostics.GeneratedConfig:
    return diagnostics.generated_builder_config(task_options, RecallOptions, "mqar")


def segment_test_split(segment: RecallOptions) -> str:
    """The name of a mix segment's own test split: test_<length>x<pairs>."""
    return f"{common.SEGMENT_TEST_PREFIX}{segment.length}x{segment.num_pairs}"


def equal_shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts that differ by at most one (the first ones larger)."""
    return [total // parts + (index < total % parts) for index in range(parts)]


class Recall(diagnostics.GeneratedPerPosition):
    """Multi-query associative recall as Zoology draws it: the target at each query is the value
    paired with its key (uint16 tokens, int16 value indices)."""

    name = "lra_recall"
    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "2.0.0": "targets at every query (64 keys, 64 values, uniform query positions)",
        "3.0.0": "Zoology's MQAR: vocabulary halves, power-law queries at even offsets, filler",
    }
    TOKEN_DTYPE = np.uint16
    LABEL_DTYPE = np.int16
    make_chunk = staticmethod(make_recall_chunk)

    def num_classes(self) -> int:
        return self.builder_config.options.num_values

    def _split_generators(self, dl_manager):
        """One segment: the shared builder's splits. A mix: each split in equal shares of every
        segment (segment s of split stream k from stream MIX_STREAM * (k + 1) + s), and each
        segment's share of the test split again as its own split."""
        options = self.builder_config.options
        if not options.mix:
            return super()._split_generators(dl_manager)
        self.info.metadata["max_length"] = options.length
        segments = options.segments()
        splits = {}
        for stream, (split, size) in enumerate(common.split_sizes(options).items()):
            parts = [
                (segment, MIX_STREAM * (stream + 1) + index, share)
                for index, (segment, share) in enumerate(
                    zip(segments, equal_shares(size, len(segments)), strict=True)
                )
            ]
            splits[split] = self._generate_parts(parts)
            if split == "test":
                for part in parts:
                    splits[segment_test_split(part[0])] = self._generate_parts([part])
        return splits

    def _generate_parts(self, parts) -> Iterator:
        """The examples of each (segment options, stream, count) in turn, numbered from 0."""
        index = 0
        for options, stream, count in parts:
            for _, example in self._generate_examples(options, stream, count):
                yield index, example
                index += 1


def for_options(task_options) -> dict:
    """The task's sizes and token labels at these options (the vocabulary is an option)."""
    options = common.parse_options(RecallOptions, task_options)
    return dict(
        vocab_size=options.vocab_size,
        num_classes=options.num_values,
        max_targets=max(segment.num_pairs for segment in options.segments()),
        token_label=options.token_label,
        class_token_offset=options.vocab_size - options.num_values,  # the values' half
    )


TASK = common.Task(
    name="recall",
    builder_class=Recall,
    builder_config=recall_builder_config,
    default_options=lambda: dataclasses.asdict(RecallOptions()),
    vocab_size=RecallOptions().vocab_size,
    num_classes=RecallOptions().num_values,
    per_position=True,
    max_targets=RecallOptions().num_pairs,
    class_token_offset=RecallOptions().vocab_size - RecallOptions().num_values,
    for_options=for_options,
)
