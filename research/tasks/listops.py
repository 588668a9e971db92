"""ListOps (Nangia and Bowman 2018, as in LRA): evaluate nested MAX/MIN/MED/SM expressions.

Expressions are generated here with LRA's procedure, or read from the LRA release's
`basic_{train,val,test}.tsv`. Either way they are written once as an array_record TFDS dataset and
read back with `tfds.data_source`.

Tokens: 0 is padding, then the 10 digits, the 4 operators and the closing bracket (vocab 16).
"""

import dataclasses
import os
import random
import statistics
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError
from research.tasks import common, parallel_generation

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
CLOSE = "]"
VOCAB = ("<pad>", *"0123456789", *OPERATORS, CLOSE)
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}
NUM_CLASSES = 10
LEAF_PROBABILITY = 0.75
RELEASE_FILES = {
    "train": "basic_train.tsv",
    "validation": "basic_val.tsv",
    "test": "basic_test.tsv",
}

# A tree is a digit (int) or (operator, [children]).
Tree = int | tuple[str, list]


def apply_operator(operator: str, values: Sequence[int]) -> int:
    """MAX, MIN, MED (median truncated to an integer) or SM (sum modulo 10)."""
    if operator == "[MAX":
        return max(values)
    if operator == "[MIN":
        return min(values)
    if operator == "[MED":
        return int(statistics.median(values))
    if operator == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {operator!r}")


def evaluate(tree: Tree) -> int:
    """The value of a tree, 0-9."""
    if isinstance(tree, int):
        return tree
    operator, children = tree
    return apply_operator(operator, [evaluate(child) for child in children])


def to_tokens(tree: Tree) -> list[str]:
    """Prefix notation with explicit closing brackets: `[MAX 4 [SM 2 3 ] ]`."""
    if isinstance(tree, int):
        return [str(tree)]
    operator, children = tree
    tokens = [operator]
    for child in children:
        tokens += to_tokens(child)
    return tokens + [CLOSE]


def sample_tree(
    rng: random.Random, *, max_depth: int, max_args: int, budget: int, depth: int = 1
) -> tuple[Tree | None, int]:
    """LRA's recursive sampler; returns (tree, token count), or (None, count) past `budget` tokens.

    Below `max_depth` a node is a leaf with probability 0.75, else an operator with
    randint(2, max_args) children. Stopping early at the budget changes no accepted tree's
    probability: such trees would be rejected by the length filter anyway.
    """
    if depth >= max_depth or rng.random() < LEAF_PROBABILITY:
        return rng.randrange(10), 1
    num_children = rng.randint(2, max_args)
    operator = rng.choice(OPERATORS)
    children, length = [], 2
    for _ in range(num_children):
        child, child_length = sample_tree(
            rng, max_depth=max_depth, max_args=max_args, budget=budget - length, depth=depth + 1
        )
        length += child_length
        if child is None or length >= budget:
            return None, length
        children.append(child)
    return (operator, children), length


@dataclasses.dataclass(frozen=True)
class GeneratorOptions:
    """What defines a generated ListOps set (LRA: 96k/2k/2k, lengths in (500, 2000), depth 10)."""

    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    min_length: int = 500
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0

    def check(self, field: str) -> None:
        common.check_counts(self, field)
        if self.max_length - self.min_length < 2:
            raise UserError(
                f"{field}.min_length={self.min_length} and max_length={self.max_length} leave no "
                "length strictly between them"
            )
        if self.max_depth < 2 or self.max_args < 2:
            raise UserError(f"{field}.max_depth and max_args must be at least 2")


CHUNK_SIZE = 1_000  # expressions per generation job
SERIAL_BELOW = 5_000  # smaller sets are generated in this process: workers would cost more


def candidate_chunk(
    options: GeneratorOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[tuple[str, ...], int]]:
    """`count` (tokens, label) pairs in the length range, possibly repeating; one worker's job."""
    rng = random.Random(int(seed_sequence.generate_state(1)[0]))
    chunk = []
    while len(chunk) < count:
        tree, length = sample_tree(
            rng, max_depth=options.max_depth, max_args=options.max_args, budget=options.max_length
        )
        if tree is not None and options.min_length < length < options.max_length:
            chunk.append((tuple(to_tokens(tree)), evaluate(tree)))
    return chunk


def generate_expressions(
    options: GeneratorOptions, count: int, *, num_workers: int = 0
) -> Iterator[tuple[list[str], int]]:
    """Yields `count` distinct (tokens, label) pairs whose length lies strictly in the range.

    Candidates come in seeded chunks, on every core for large sets (`num_workers=0`), and are
    deduplicated in chunk order, so the result depends on the seed only, not on the workers.
    """
    limit = 20 * count + 10 * CHUNK_SIZE  # candidates to try before giving up on distinctness
    candidates = parallel_generation.generate(
        candidate_chunk,
        options,
        total=limit,
        seed=options.seed,
        chunk_size=CHUNK_SIZE,
        num_workers=1 if count < SERIAL_BELOW else num_workers,
    )
    seen: set[tuple[str, ...]] = set()
    for tokens, label in candidates:
        if tokens in seen:
            continue
        seen.add(tokens)
        yield list(tokens), label
        if len(seen) == count:
            candidates.close()
            return
    raise UserError(
        f"config.task_options: only {len(seen)} distinct expressions of lengths strictly between "
        f"{options.min_length} and {options.max_length} found in {limit} tries, {count} needed; "
        "widen the length range or raise max_depth"
    )


def encode(tokens: Sequence[str], where: str) -> np.ndarray:
    """Token strings -> uint8 ids; `where` names the source in the error for an unknown token."""
    try:
        return np.array([TOKEN_ID[token] for token in tokens], np.uint8)
    except KeyError as error:
        raise UserError(
            f"{where}: unknown ListOps token {error.args[0]!r}; valid: digits, "
            f"{', '.join(OPERATORS)}, {CLOSE} (round brackets are dropped)"
        ) from None


def check_release_dir(release_dir: str) -> None:
    """Raises UserError unless `release_dir` holds the three LRA ListOps TSV files with headers."""
    what = "the LRA release's listops folder"
    for path in common.check_release_files(release_dir, RELEASE_FILES.values(), what):
        with open(path, encoding="utf-8") as file:
            header = file.readline().rstrip("\n").split("\t")
        if header != ["Source", "Target"]:
            raise UserError(f"{path}:1: header must be 'Source<TAB>Target', found {header!r}")


def read_release_file(path: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (token ids, label) from one LRA ListOps TSV file; malformed lines are UserErrors."""
    with open(path, encoding="utf-8") as file:
        next(file)
        for line_number, line in enumerate(file, start=2):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            columns = line.rstrip("\n").split("\t")
            if len(columns) != 2 or not columns[1].strip().isdigit():
                raise UserError(f"{where}: expected '<expression><TAB><label 0-9>'")
            label = int(columns[1])
            if not 0 <= label < NUM_CLASSES:
                raise UserError(f"{where}: label {label} is outside 0-9")
            tokens = [t for t in columns[0].split() if t not in ("(", ")")]
            yield encode(tokens, where), label


@dataclasses.dataclass
class ListOpsConfig(tfds.core.BuilderConfig):
    """A generated dataset (`generator`) or the LRA release files in `release_dir`."""

    generator: GeneratorOptions = dataclasses.field(default_factory=GeneratorOptions)
    release_dir: str = ""


def builder_config(task_options) -> ListOpsConfig:
    """The builder config for `config.task_options`, named so each variant gets its own folder."""
    options = dict(task_options)
    release_dir = options.pop("release_dir", "")
    if release_dir:
        release_dir = os.path.abspath(os.path.expanduser(release_dir))
        check_release_dir(release_dir)
        digest = common.path_digest(release_dir)
        return ListOpsConfig(name=f"release_{digest}", release_dir=release_dir)
    generator = g = common.parse_options(GeneratorOptions, options)
    name = (
        f"generated_train{g.num_train}_val{g.num_val}_test{g.num_test}_len{g.min_length}-"
        f"{g.max_length}_depth{g.max_depth}_args{g.max_args}_seed{g.seed}"
    )
    return ListOpsConfig(name=name, generator=generator)


class ListOps(tfds.core.GeneratorBasedBuilder):
    """ListOps as token ids (uint8) and a label; metadata["max_length"] is the longest example."""

    name = "lra_listops"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(self, num_classes=NUM_CLASSES)

    def _split_generators(self, dl_manager):
        config: ListOpsConfig = self.builder_config
        if config.release_dir:
            splits = {
                split: list(read_release_file(os.path.join(config.release_dir, name)))
                for split, name in RELEASE_FILES.items()
            }
        else:
            splits = self._generated_splits(config.generator)
        self.info.metadata["max_length"] = max(
            (len(tokens) for examples in splits.values() for tokens, _ in examples), default=0
        )
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

    @staticmethod
    def _generated_splits(options: GeneratorOptions) -> dict[str, list]:
        sizes = common.split_sizes(options)
        expressions = generate_expressions(options, sum(sizes.values()))
        return {
            split: [
                (encode(tokens, "generator"), label)
                for tokens, label in (next(expressions) for _ in range(size))
            ]
            for split, size in sizes.items()
        }

    def _generate_examples(self, examples):
        for index, (tokens, label) in enumerate(examples):
            yield index, {"tokens": tokens, "label": label}


TASK = common.Task(
    name="listops",
    builder_class=ListOps,
    builder_config=builder_config,
    default_options=lambda: {**dataclasses.asdict(GeneratorOptions()), "release_dir": ""},
    vocab_size=len(VOCAB),
    num_classes=NUM_CLASSES,
    token_label=VOCAB.__getitem__,
)
