"""Pieces every task shares: the `Task` record each task module declares, the split names, its
DatasetInfo, the options protocol, folder names.

Options protocol: a task's options are a frozen dataclass with a `check(field)` method (as the
attention variants' options are), `field` being the config path they came from
("config.task_options"); `parse_options` refuses unknown keys, builds the dataclass and checks it.
"""

import dataclasses
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError, check_known, check_positive

# Every task's splits, in the order (and with the stream index) in which generated sets draw them.
SPLITS = ("train", "validation", "test")
# The options of a generated set that give each split's number of examples.
SIZE_OPTIONS = dict(zip(SPLITS, ("num_train", "num_val", "num_test"), strict=True))
OPTIONS_FIELD = "config.task_options"
# A dataset may hold test splits of its parts beside "test" (MQAR's mix: test_64x4, ...); the
# trainer scores each after the test split.
SEGMENT_TEST_PREFIX = "test_"


@dataclasses.dataclass(frozen=True)
class Task:
    """What the training loop needs to know about a task.

    builder_config: maps `config.task_options` to a `tfds.core.BuilderConfig` (validating it).
    default_options: every `config.task_options` field with its default, from the dataclasses that
      define them (configs/base.py: set_task), so each default is stated once.
    sequence_fields: the token fields of an example; each gets a padding mask in the batch.
    per_position: the label is a class per position (-1 = no target), read by a per-position
      head (`config.model.head = "tagger"`), not one class per example.
    max_targets: for a per-position task whose examples have at most this many targets (MQAR: one
      per pair), batches carry only those positions (`label` [B, K] and `target_positions`
      [B, K], K = max_targets) and the per-position head computes logits there alone: the same
      loss at K / T of the head's cost (16 times less for MQAR, whose length is 16 x pairs).
      None: a label at every position.
    token_label: token id -> a short label for display (e.g. attention maps' ticks).
    class_token_offset: for a task whose classes are tokens (MQAR's values), class c is token
      class_token_offset + c, so a tied output layer (`config.model.tie_output`) can score class c
      with that token's embedding; None: the classes are not tokens.
    for_options: for a task whose vocabulary or classes are options (MQAR's `vocab_size`),
      `config.task_options` -> the fields above that they change; `at_options` applies it.
    """

    name: str
    builder_class: type[tfds.core.GeneratorBasedBuilder]
    builder_config: Callable
    default_options: Callable[[], dict]
    vocab_size: int
    num_classes: int
    sequence_fields: tuple[str, ...] = ("tokens",)
    per_position: bool = False
    max_targets: int | None = None
    token_label: Callable[[int], str] = str
    class_token_offset: int | None = None
    for_options: Callable[[Mapping[str, Any]], dict] | None = None

    def at_options(self, task_options: Mapping[str, Any]) -> "Task":
        """This task with the vocabulary, classes and token labels of `task_options`."""
        if self.for_options is None:
            return self
        return dataclasses.replace(self, **self.for_options(task_options))


def classification_info(
    builder: tfds.core.GeneratorBasedBuilder,
    *,
    num_classes: int,
    token_fields: Sequence[str] = ("tokens",),
    token_shape: tuple = (None,),
    per_position_labels: bool = False,
    token_dtype: type = np.uint8,
    label_dtype: type = np.int8,
) -> tfds.core.DatasetInfo:
    """`token_dtype` (uint8 unless a vocabulary needs more) token sequences and a class label;
    metadata carries "max_length" (set on build).

    With `per_position_labels` the label is a `label_dtype` sequence as long as the tokens: a
    class per position, -1 where a position has no target.
    """
    features = {field: tfds.features.Tensor(shape=token_shape, dtype=token_dtype)
                for field in token_fields}  # fmt: skip
    if per_position_labels:
        features["label"] = tfds.features.Tensor(shape=(None,), dtype=label_dtype)
    else:
        features["label"] = tfds.features.ClassLabel(num_classes=num_classes)
    return tfds.core.DatasetInfo(
        builder=builder,
        description=type(builder).__doc__,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(),
    )


def parse_options(
    options_class: type, task_options: Mapping[str, Any], *, other: Sequence[str] = ()
):
    """`options_class` built from `task_options` (`config.task_options`) and checked; an unknown
    key or a bad value is a UserError naming the field. `other` names the keys the caller reads
    itself (valid, not passed to `options_class`)."""
    fields = {field.name for field in dataclasses.fields(options_class)}
    check_known(OPTIONS_FIELD, task_options, fields | set(other))
    options = options_class(**{key: task_options[key] for key in fields & set(task_options)})
    options.check(OPTIONS_FIELD)
    return options


def check_counts(options, field: str) -> None:
    """Raises UserError unless every `int` field of the dataclass `options` is an integer >= 0
    (booleans refused) and each split of the generated set (`num_train`, `num_val`, `num_test`)
    holds at least one example."""
    for option in dataclasses.fields(options):
        if option.type is int:
            check_positive(f"{field}.{option.name}", getattr(options, option.name), allow_zero=True)
    for name in SIZE_OPTIONS.values():
        if getattr(options, name) < 1:
            raise UserError(f"{field}.{name}=0: every split needs at least one example")


def split_sizes(options) -> dict[str, int]:
    """split -> examples of a generated set (its options' `num_train`, `num_val`, `num_test`)."""
    return {split: getattr(options, name) for split, name in SIZE_OPTIONS.items()}


def byte_label(token: int) -> str:
    """A byte token as its character, escaped (`\\n`, `\\x00`) when unprintable or a space."""
    char = chr(token)
    return repr(char)[1:-1] if not char.isprintable() or char == " " else char


def path_digest(path: str) -> str:
    """A short stable name for a user's source path (one dataset folder per source)."""
    return hashlib.sha1(path.encode()).hexdigest()[:12]


@dataclasses.dataclass
class SourceConfig(tfds.core.BuilderConfig):
    """A dataset read from one file or folder the user names (`config.task_options.source`)."""

    source: str = ""


def source_builder_config(task_options, resolve: Callable[[str], str], prefix: str) -> SourceConfig:
    """Validates `task_options` (only `source`), resolves the source and names the folder."""
    options = dict(task_options)
    check_known(OPTIONS_FIELD, options, {"source"})
    source = resolve(options.get("source", ""))
    return SourceConfig(name=f"{prefix}_{path_digest(source)}", source=source)


def check_release_files(release_dir: str, names: Iterable[str], what: str) -> list[str]:
    """The paths of the files `names` in `release_dir` (config.task_options.release_dir); a
    UserError if the folder or one of them is missing. `what` describes the folder expected."""
    expected = ", ".join(names)
    if not os.path.isdir(release_dir):
        raise UserError(
            f"{OPTIONS_FIELD}.release_dir={release_dir!r} is not a folder; expected {what} "
            f"holding {expected}"
        )
    paths = [os.path.join(release_dir, name) for name in names]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing; {what} must hold {expected}")
    return paths


def archive_or_folder(
    source: str,
    find_folder: Callable[[str], str | None],
    *,
    archive_name: str,
    expected: str,
    not_found: str,
) -> str:
    """`config.task_options.source` resolved to a tar archive or to the extracted folder that
    `find_folder(path)` recognises (it may also raise about a partial folder); a folder holding
    `archive_name` resolves to that archive. Otherwise a UserError `<source> <not_found>;
    expected <expected>`."""
    if not source:
        raise UserError(f"{OPTIONS_FIELD}.source is empty; point it at {expected}")
    source = os.path.abspath(os.path.expanduser(source))
    if os.path.isfile(source):
        if not tarfile.is_tarfile(source):
            raise UserError(f"{source} is not a tar archive; expected {expected}")
        return source
    if os.path.isdir(source):
        folder = find_folder(source)
        if folder is not None:
            return folder
        archive = os.path.join(source, archive_name)
        if os.path.isfile(archive):
            return archive_or_folder(
                archive,
                find_folder,
                archive_name=archive_name,
                expected=expected,
                not_found=not_found,
            )
    raise UserError(f"{source} {not_found}; expected {expected}")
