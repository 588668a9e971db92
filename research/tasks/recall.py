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
"""

import dataclasses

import numpy as np

from research.errors import UserError, check_choice, check_positive

NO_TARGET = -1
QUERY_PLACEMENTS = ("power_law", "adjacent")
FILLERS = ("zero", "random")
MAX_VOCAB_SIZE = 65_536  # tokens are stored as uint16


@dataclasses.dataclass(frozen=True)
class RecallOptions:
    """MQAR's data: Zoology's Figure 2 defaults (vocabulary 8,192, power law a = 0.01, filler 0)
    at 8 pairs in 64 tokens; `num_train`/`num_val`/`num_test` examples per split."""

    num_pairs: int = 8
    length: int = 64
    vocab_size: int = 8_192
    queries: str = "power_law"
    power_a: float = 0.01
    filler: str = "zero"
    num_train: int = 20_000
    num_val: int = 1_000
    num_test: int = 1_000
    seed: int = 0

    def validate(self) -> None:
        """One-line UserErrors naming `config.task_options.<field>`."""
        field = "config.task_options"
        for name in ("num_pairs", "length", "vocab_size", "num_train", "num_val", "num_test"):
            check_positive(f"{field}.{name}", getattr(self, name))
        check_positive(f"{field}.seed", self.seed, allow_zero=True)
        check_choice(f"{field}.queries", self.queries, QUERY_PLACEMENTS)
        check_choice(f"{field}.filler", self.filler, FILLERS)
        if not 0 < self.power_a <= 1:
            raise UserError(f"{field}.power_a={self.power_a!r} must lie in (0, 1] (1 = uniform)")
        if self.length % 2:
            raise UserError(
                f"{field}.length={self.length} must be even (queries sit at even offsets)"
            )
        if self.length < 4 * self.num_pairs:
            raise UserError(
                f"{field}.length={self.length} is shorter than 4 * num_pairs = "
                f"{4 * self.num_pairs} (the pairs, then a query and a gap per key)"
            )
        if not 2 * (self.num_pairs + 1) <= self.vocab_size <= MAX_VOCAB_SIZE:
            raise UserError(
                f"{field}.vocab_size={self.vocab_size} must lie in {2 * (self.num_pairs + 1)}.."
                f"{MAX_VOCAB_SIZE} (num_pairs distinct keys in its lower half, values in its upper)"
            )

    @property
    def num_values(self) -> int:
        """The classes of the target: every value token, V/2 .. V - 1."""
        return self.vocab_size - self.vocab_size // 2


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
