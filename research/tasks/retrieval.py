"""AAN citation pairs (Radev et al. 2013, as in LRA's Retrieval task): does one paper cite the
other?

Read from the LRA release's `new_aan_pairs.{train,eval,test}.tsv` (no header; each line
`<label><TAB><id1><TAB><id2><TAB><text1><TAB><text2>`, label 0 or 1, also written 0.0 or 1.0).
The two documents are stored whole as UTF-8 bytes in `tokens1` and `tokens2` (uint8, vocab 256;
0 is padding only); LRA's 4,000 bytes per document are applied when batching with
`config.truncate=True`. Train with the two-tower model (`config.model.head = "two_tower"`).
"""

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError, check_known
from research.tasks import common

NUM_CLASSES = 2
VOCAB_SIZE = 256
RELEASE_FILES = {
    "train": "new_aan_pairs.train.tsv",
    "validation": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
LINE_FORMAT = "'<label 0/1><TAB><id1><TAB><id2><TAB><text1><TAB><text2>'"


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).copy()


def parse_label(field: str) -> int | None:
    """0 or 1 from '0', '1', '0.0', '1.0'; None for anything else."""
    try:
        value = float(field)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def check_release_dir(release_dir: str) -> None:
    """Raises UserError unless the three TSV files are there."""
    what = f"the LRA release's tsv_data folder (lines {LINE_FORMAT})"
    common.check_release_files(release_dir, RELEASE_FILES.values(), what)


def read_release_file(path: str) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yields (tokens1, tokens2, label) per line; a malformed line is a UserError."""
    with open(path, encoding="utf-8", newline="\n") as file:
        for line_number, line in enumerate(file, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            columns = line.split("\t")
            label = parse_label(columns[0]) if len(columns) == 5 else None
            if label is None:
                raise UserError(
                    f"{path}:{line_number}: expected {LINE_FORMAT}, found {len(columns)} "
                    f"column(s) starting {line[:40]!r}"
                )
            yield encode(columns[3]), encode(columns[4]), label


@dataclasses.dataclass
class RetrievalConfig(tfds.core.BuilderConfig):
    release_dir: str = ""


def builder_config(task_options) -> RetrievalConfig:
    """The builder config for `config.task_options` (only `release_dir`)."""
    options = dict(task_options)
    check_known(common.OPTIONS_FIELD, options, {"release_dir"})
    release_dir = options.get("release_dir", "")
    if not release_dir:
        raise UserError(
            "config.task_options.release_dir is empty; point it at the folder holding "
            f"{', '.join(RELEASE_FILES.values())}"
        )
    release_dir = os.path.abspath(os.path.expanduser(release_dir))
    check_release_dir(release_dir)
    digest = common.path_digest(release_dir)
    return RetrievalConfig(name=f"aan_{digest}", release_dir=release_dir)


class Retrieval(tfds.core.GeneratorBasedBuilder):
    """Document pairs as byte tokens (`tokens1`, `tokens2`, uint8) and a label (1 = citation)."""

    name = "lra_retrieval"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(
            self, num_classes=NUM_CLASSES, token_fields=("tokens1", "tokens2")
        )

    def _split_generators(self, dl_manager):
        # A first pass checks every line and finds the longest document before anything is
        # written; the files are read again when writing, as they may not fit in memory.
        paths = {
            split: os.path.join(self.builder_config.release_dir, name)
            for split, name in RELEASE_FILES.items()
        }
        longest = 0
        for path in paths.values():
            lengths = [max(len(a), len(b)) for a, b, _ in read_release_file(path)]
            if not lengths:
                raise UserError(f"{path} holds no pairs; expected lines {LINE_FORMAT}")
            longest = max(longest, *lengths)
        self.info.metadata["max_length"] = longest
        return {split: self._generate_examples(path) for split, path in paths.items()}

    @staticmethod
    def _generate_examples(path: str):
        for index, (tokens1, tokens2, label) in enumerate(read_release_file(path)):
            yield index, {"tokens1": tokens1, "tokens2": tokens2, "label": label}


TASK = common.Task(
    name="retrieval",
    builder_class=Retrieval,
    builder_config=builder_config,
    default_options=lambda: {"release_dir": ""},
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    token_label=common.byte_label,
    sequence_fields=("tokens1", "tokens2"),
)
