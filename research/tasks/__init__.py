"""Task registry: `config.task` -> `Task` (its TFDS builder, vocabulary and classes), and building
or reading a task's data."""

import contextlib
import io
import logging
import os
import sys

import tensorflow_datasets as tfds

from research.errors import check_choice
from research.tasks import diagnostics, image, listops, pathfinder, recall, retrieval, text
from research.tasks.common import SEGMENT_TEST_PREFIX, SPLITS, Task
from research.training.locks import BuildLock

# One line per task: each module declares its own `Task` (adding a task touches its module, its
# config and this list).
TASKS = {
    task.name: task
    for task in (
        listops.TASK,
        text.TASK,
        retrieval.TASK,
        image.TASK,
        pathfinder.TASK,
        recall.TASK,
        diagnostics.DISTANCE_TASK,
    )
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

    builder_config = task.builder_config(task_options)  # validates (and may read the release)

    def make_builder():
        return task.builder_class(
            config=builder_config, data_dir=data_dir(config_data_dir), file_format="array_record"
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
    """split -> random-access data source (`tfds.data_source` reads array_record, no TensorFlow):
    train, validation, test, then any segment test splits (common.SEGMENT_TEST_PREFIX)."""
    segments = [s for s in builder.info.splits if s.startswith(SEGMENT_TEST_PREFIX)]
    return {split: builder.as_data_source(split=split) for split in (*SPLITS, *segments)}
