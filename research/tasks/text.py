"""Byte-level IMDb sentiment (Maas et al. 2011, as in LRA's Text task).

Read from the user's copy of the Stanford release, either `aclImdb_v1.tar.gz` or the extracted
`aclImdb/` folder: `{train,test}/{pos,neg}/<id>_<rating>.txt` (UTF-8 reviews; `unsup/` is ignored).
Each review is stored whole as its UTF-8 bytes (uint8 tokens, vocab 256; no review holds a NUL byte,
so 0 is padding only); LRA's length (1,000 or 4,000) is applied when batching with
`config.truncate=True`. As in LRA, the test reviews serve as both validation and test split.
"""

import os
import re
import tarfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError
from research.tasks import common

NUM_CLASSES = 2
VOCAB_SIZE = 256
LABELS = {"neg": 0, "pos": 1}
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
EXPECTED = (
    "the IMDb release as aclImdb_v1.tar.gz or its extracted aclImdb/ folder, holding "
    "{train,test}/{pos,neg}/<id>_<rating>.txt"
)
# train/pos/123_9.txt inside the archive or folder (with or without the leading aclImdb/).
_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")


def encode(text: bytes) -> np.ndarray:
    """Bytes as uint8 tokens."""
    return np.frombuffer(text, np.uint8).copy()


def resolve_source(source: str) -> str:
    """The archive or the folder (`aclImdb/` itself or the folder holding it) to read."""
    return common.archive_or_folder(
        source,
        _imdb_folder,
        archive_name=ARCHIVE_NAME,
        expected=EXPECTED,
        not_found="does not exist or lacks train/ and test/ pos/neg folders",
    )


def _imdb_folder(source: str) -> str | None:
    for folder in (source, os.path.join(source, "aclImdb")):
        splits = (
            os.path.join(folder, split, label) for split in ("train", "test") for label in LABELS
        )
        if all(os.path.isdir(path) for path in splits):
            return folder
    return None


def read_folder(folder: str, split: str) -> Iterator[tuple[str, np.ndarray, int]]:
    """(key, tokens, label) for one split of an extracted aclImdb folder, in name order."""
    for label_name, label in LABELS.items():
        directory = os.path.join(folder, split, label_name)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".txt"):
                with open(os.path.join(directory, name), "rb") as file:
                    yield f"{label_name}/{name}", encode(file.read()), label


def read_archive(path: str, split: str) -> Iterator[tuple[str, np.ndarray, int]]:
    """(key, tokens, label) for one split of aclImdb_v1.tar.gz, in archive order."""
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                match = _MEMBER.search(member.name)
                if not member.isfile() or not match or match.group(1) != split:
                    continue
                text = archive.extractfile(member).read()
                yield member.name, encode(text), LABELS[match.group(2)]
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(
            f"{path}: unreadable tar.gz archive ({error}); expected {EXPECTED}"
        ) from None


def read_split(source: str, split: str) -> list[tuple[str, np.ndarray, int]]:
    """Every review of a split; an empty split is a UserError."""
    reader = read_archive if os.path.isfile(source) else read_folder
    examples = list(reader(source, split))
    if not examples:
        raise UserError(
            f"{source}: no {split}/pos or {split}/neg reviews found; expected {EXPECTED}"
        )
    return examples


def builder_config(task_options) -> common.SourceConfig:
    """The builder config for `config.task_options` (only `source`, the user's IMDb copy)."""
    return common.source_builder_config(task_options, resolve_source, "imdb")


class Text(tfds.core.GeneratorBasedBuilder):
    """IMDb reviews as byte tokens (uint8) and a label (1 = positive)."""

    name = "lra_text"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(self, num_classes=NUM_CLASSES)

    def _split_generators(self, dl_manager):
        source = self.builder_config.source
        train, test = read_split(source, "train"), read_split(source, "test")
        self.info.metadata["max_length"] = max(len(t) for _, t, _ in train + test)
        return {
            "train": self._generate_examples(train),
            "validation": self._generate_examples(test),
            "test": self._generate_examples(test),
        }

    @staticmethod
    def _generate_examples(examples):
        for key, tokens, label in examples:
            yield key, {"tokens": tokens, "label": label}


TASK = common.Task(
    name="text",
    builder_class=Text,
    builder_config=builder_config,
    default_options=lambda: {"source": ""},
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    token_label=common.byte_label,
)
