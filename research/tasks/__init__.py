"""Task registry: `config.task` -> `Task` (its TFDS builder, vocabulary and classes)."""

import contextlib
import dataclasses
import io
import logging
import os
import sys
from collections.abc import Callable

import tensorflow_datasets as tfds

from research.errors import check_choice
from research.locks import BuildLock
from research.tasks import diagnostics, image, listops, pathfinder, retrieval, text

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Task:
    """What the training loop needs to know about a task.

    builder_config: maps `config.task_options` to a `tfds.core.BuilderConfig` (validating it).
    sequence_fields: the token fields of an example; each gets a padding mask in the batch.
    per_position: the label is a class per position (-1 = no target), read by a per-position
      head (`config.model.head = "tagger"`), not one class per example.
    """

    name: str
    builder_class: type[tfds.core.GeneratorBasedBuilder]
    builder_config: Callable
    vocab_size: int
    num_classes: int
    sequence_fields: tuple[str, ...] = ("tokens",)
    per_position: bool = False


TASKS = {
    "listops": Task(
        name="listops",
        builder_class=listops.ListOps,
        builder_config=listops.builder_config,
        vocab_size=len(listops.VOCAB),
        num_classes=listops.NUM_CLASSES,
    ),
    "text": Task(
        name="text",
        builder_class=text.Text,
        builder_config=text.builder_config,
        vocab_size=text.VOCAB_SIZE,
        num_classes=text.NUM_CLASSES,
    ),
    "retrieval": Task(
        name="retrieval",
        builder_class=retrieval.Retrieval,
        builder_config=retrieval.builder_config,
        vocab_size=retrieval.VOCAB_SIZE,
        num_classes=retrieval.NUM_CLASSES,
        sequence_fields=("tokens1", "tokens2"),
    ),
    "image": Task(
        name="image",
        builder_class=image.Image,
        builder_config=image.builder_config,
        vocab_size=image.VOCAB_SIZE,
        num_classes=image.NUM_CLASSES,
    ),
    "pathfinder": Task(
        name="pathfinder",
        builder_class=pathfinder.Pathfinder,
        builder_config=pathfinder.builder_config,
        vocab_size=pathfinder.VOCAB_SIZE,
        num_classes=pathfinder.NUM_CLASSES,
    ),
    "recall": Task(
        name="recall",
        builder_class=diagnostics.Recall,
        builder_config=diagnostics.recall_builder_config,
        vocab_size=diagnostics.RECALL_VOCAB_SIZE,
        num_classes=diagnostics.MAX_VALUES,
        per_position=True,
    ),
    "distance": Task(
        name="distance",
        builder_class=diagnostics.Distance,
        builder_config=diagnostics.distance_builder_config,
        vocab_size=diagnostics.DISTANCE_VOCAB_SIZE,
        num_classes=2,
        per_position=True,
    ),
}


def get_task(name: str) -> Task:
    check_choice("config.task", name, sorted(TASKS))
    return TASKS[name]


def data_dir(config_data_dir: str) -> str:
    """`config.data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    path = config_data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return os.path.expanduser(path)


class _HideExpectedTfdsWarnings(logging.Filter):
    """tfds warns that every task's builder config is custom (each names its options) and, before
    a first build, that the dataset's folder has no dataset_info.json: expected here, so hidden."""

    EXPECTED = ("Using custom data configuration", "Variant folder")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.EXPECTED)


logging.getLogger("absl").addFilter(_HideExpectedTfdsWarnings())


def prepare_builder(task: Task, task_options, config_data_dir: str) -> tfds.core.DatasetBuilder:
    """Builds the dataset once (array_record) and returns its builder; later calls reuse it.

    Safe under concurrency (sweep cells side by side, machines sharing a data folder): one
    process generates while the others wait on a lock beside the folder, then read its result.

    tfds prints "Downloading and preparing dataset ..." to stdout; nothing is downloaded here, so
    one line of our own says what happens instead.
    """

    def make_builder():
        return task.builder_class(
            config=task.builder_config(task_options),
            data_dir=data_dir(config_data_dir),
            file_format="array_record",
        )

    builder = make_builder()
    if builder.is_prepared():
        return builder
    with BuildLock(builder.data_dir):  # another process may be generating the same folder
        if not builder.is_prepared():
            print(f"generating the {task.name} data into {builder.data_dir}", file=sys.stderr)
            tfds.disable_progress_bar()
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare()
    return make_builder()  # reads dataset_info.json, also when another process wrote it


def load_sources(builder: tfds.core.DatasetBuilder) -> dict:
    """split -> random-access data source (`tfds.data_source` reads array_record, no TensorFlow)."""
    return {split: builder.as_data_source(split=split) for split in SPLITS}
