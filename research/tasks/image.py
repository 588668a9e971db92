"""CIFAR-10 in grayscale as 1,024-pixel sequences (LRA's Image task).

Read from the user's `cifar-10-python.tar.gz` (Krizhevsky 2009, "CIFAR-10 python version") or its
extracted `cifar-10-batches-py/` folder: pickled dicts `data_batch_1` .. `data_batch_5` and
`test_batch`, each with b"data" (N x 3072 uint8: the red, green and blue 32x32 planes, row-major)
and b"labels" (N ints 0-9). Pixels become gray exactly as LRA's `tf.image.rgb_to_grayscale` makes
them from uint8 images (`to_gray`), and are stored flat (uint8 tokens, vocab 256). As in LRA, the
first 90% of the training images train and the last 10% validate; `test_batch` is the test split.

The batches are Python pickles, the format CIFAR is published in: read only a copy you trust.
"""

import os
import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError
from research.tasks import common

NUM_CLASSES = 10
VOCAB_SIZE = 256
SIDE = 32
FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
TRAIN_FRACTION = 0.9
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)  # ITU-R 601, as TF states them
EXPECTED = (
    f"{ARCHIVE_NAME} or its extracted {FOLDER}/ folder holding "
    f"{', '.join(TRAIN_BATCHES)} and {TEST_BATCH} (pickled dicts with b'data' N x 3072 uint8 "
    "and b'labels')"
)


def to_gray(data_N3072: np.ndarray) -> np.ndarray:
    """gray_N1024 uint8 from CIFAR's planar RGB rows, as `tf.image.rgb_to_grayscale` computes it
    for uint8 images: in float32, x / 255 per channel (`convert_image_dtype`), the weighted sum,
    then back to uint8 by scaling with 255.5 and casting, which truncates. So a pure green 255
    becomes 149 (0.587 * 255.5 = 149.98), not the 150 that rounding 0.587 * 255 would give."""
    rgb_N3P = data_N3072.reshape(-1, 3, SIDE * SIDE).astype(np.float32) * np.float32(1 / 255)
    gray = np.einsum("ncp,c->np", rgb_N3P, GRAY_WEIGHTS)
    return (gray * np.float32(255.5)).astype(np.uint8)


def resolve_source(source: str) -> str:
    """The archive, or the extracted folder (given itself or the folder above it)."""
    return common.archive_or_folder(
        source,
        _batches_folder,
        archive_name=ARCHIVE_NAME,
        expected=EXPECTED,
        not_found="does not hold CIFAR-10",
    )


def _batches_folder(source: str) -> str | None:
    """`source` or its FOLDER when it holds the test batch; every train batch must be there too."""
    for candidate in (source, os.path.join(source, FOLDER)):
        if os.path.isfile(os.path.join(candidate, TEST_BATCH)):
            for name in TRAIN_BATCHES:
                if not os.path.isfile(os.path.join(candidate, name)):
                    raise UserError(
                        f"{os.path.join(candidate, name)} is missing; expected {EXPECTED}"
                    )
            return candidate
    return None


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(gray_N1024, labels_N) from one pickled batch; a malformed batch is a UserError."""
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[b"labels"], np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{where}: not a CIFAR-10 python batch ({error!r}); expected {EXPECTED}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or len(labels) != len(data):
        raise UserError(
            f"{where}: b'data' has shape {data.shape} for {len(labels)} labels; expected "
            "N x 3072 uint8 and N labels"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise UserError(f"{where}: labels outside 0-9")
    return to_gray(data), labels


def read_batches(source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """batch name -> (gray_N1024, labels_N) for the five training batches and the test batch."""
    names = (*TRAIN_BATCHES, TEST_BATCH)
    if os.path.isdir(source):
        raw = {}
        for name in names:
            with open(os.path.join(source, name), "rb") as file:
                raw[name] = file.read()
    else:
        raw = {}
        try:
            with tarfile.open(source) as archive:
                for member in archive:
                    base = os.path.basename(member.name)
                    if (
                        member.isfile()
                        and base in names
                        and os.path.dirname(member.name).endswith(FOLDER)
                    ):
                        raw[base] = archive.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise UserError(
                f"{source}: unreadable archive ({error}); expected {EXPECTED}"
            ) from None
        missing = [name for name in names if name not in raw]
        if missing:
            raise UserError(f"{source}: lacks {FOLDER}/{', '.join(missing)}; expected {EXPECTED}")
    return {
        name: parse_batch(
            data, f"{source}:{name}" if os.path.isfile(source) else os.path.join(source, name)
        )
        for name, data in raw.items()
    }


def builder_config(task_options) -> common.SourceConfig:
    """The builder config for `config.task_options` (only `source`, the user's CIFAR-10 copy)."""
    return common.source_builder_config(task_options, resolve_source, "cifar10_gray")


class Image(tfds.core.GeneratorBasedBuilder):
    """Grayscale CIFAR-10: 1,024 uint8 pixels ("tokens") and a label 0-9."""

    name = "lra_image"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"2.0.0": "gray levels as tf.image.rgb_to_grayscale makes them (truncated)"}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(self, num_classes=NUM_CLASSES, token_shape=(SIDE * SIDE,))

    def _split_generators(self, dl_manager):
        batches = read_batches(self.builder_config.source)
        train_x = np.concatenate([batches[name][0] for name in TRAIN_BATCHES])
        train_y = np.concatenate([batches[name][1] for name in TRAIN_BATCHES])
        cut = int(len(train_x) * TRAIN_FRACTION)
        self.info.metadata["max_length"] = SIDE * SIDE
        return {
            "train": self._generate_examples(train_x[:cut], train_y[:cut]),
            "validation": self._generate_examples(train_x[cut:], train_y[cut:]),
            "test": self._generate_examples(*batches[TEST_BATCH]),
        }

    @staticmethod
    def _generate_examples(pixels_N1024: np.ndarray, labels_N: np.ndarray):
        for index, (tokens, label) in enumerate(zip(pixels_N1024, labels_N, strict=True)):
            yield index, {"tokens": tokens, "label": int(label)}


TASK = common.Task(
    name="image",
    builder_class=Image,
    builder_config=builder_config,
    default_options=lambda: {"source": ""},
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
)
