"""Pieces every task shares: the `Task` record each task module declares, the split names, its
DatasetInfo, the options protocol, folder names.

Options protocol: a task's options are a frozen dataclass with a `check(field)` method (as the
attention variants' options are), `field` being the config path they came from
("config.task_options"); `parse_options` refuses unknown keys, builds the dataclass and checks it.
"""

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError, check_known, check_positive

# Every task's splits, in the order (and with the stream index) in which generated sets draw them.
SPLITS = ("train", "validation", "test")
# The options of a generated set that give each split's number of examples.
SIZE_OPTIONS = dict(zip(SPLITS, ("num_train", "num_val", "num_test"), strict=True))
OPTIONS_FIELD = "config.task_options"


@dataclasses.dataclass(frozen=True)
class Task:
    """What the training loop needs to know about a task.

    builder_config: maps `config.task_options` to a `tfds.core.BuilderConfig` (validating it).
    default_options: every `config.task_options` field with its default, from the dataclasses that
      define them (configs/base.py: set_task), so each default is stated once.
    sequence_fields: the token fields of an example; each gets a padding mask in the batch.
    per_position: the label is a class per position (-1 = no target), read by a per-position
      head (`config.model.head = "tagger"`), not one class per example.
    token_label: token id -> a short label for display (e.g. attention maps' ticks).
    """

    name: str
    builder_class: type[tfds.core.GeneratorBasedBuilder]
    builder_config: Callable
    default_options: Callable[[], dict]
    vocab_size: int
    num_classes: int
    sequence_fields: tuple[str, ...] = ("tokens",)
    per_position: bool = False
    token_label: Callable[[int], str] = str


def classification_info(
    builder: tfds.core.GeneratorBasedBuilder,
    *,
    num_classes: int,
    token_fields: Sequence[str] = ("tokens",),
    token_shape: tuple = (None,),
    per_position_labels: bool = False,
) -> tfds.core.DatasetInfo:
    """uint8 token sequences and a class label; metadata carries "max_length" (set on build).

    With `per_position_labels` the label is an int8 sequence as long as the tokens: a class per
    position, -1 where a position has no target.
    """
    features = {field: tfds.features.Tensor(shape=token_shape, dtype=np.uint8)
                for field in token_fields}  # fmt: skip
    if per_position_labels:
        features["label"] = tfds.features.Tensor(shape=(None,), dtype=np.int8)
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
