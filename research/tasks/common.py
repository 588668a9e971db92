"""Pieces every task shares: the `Task` record each task module declares, its DatasetInfo, option
checks, folder names."""

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError


@dataclasses.dataclass(frozen=True)
class Task:
    """What the training loop needs to know about a task.

    builder_config: maps `config.task_options` to a `tfds.core.BuilderConfig` (validating it).
    default_options: every `config.task_options` field with its default, from the dataclasses that
      define them (configs/base.py: set_task), so each default is stated once.
    sequence_fields: the token fields of an example; each gets a padding mask in the batch.
    per_position: the label is a class per position (-1 = no target), read by a per-position
      head (`config.model.head = "tagger"`), not one class per example.
    """

    name: str
    builder_class: type[tfds.core.GeneratorBasedBuilder]
    builder_config: Callable
    default_options: Callable[[], dict]
    vocab_size: int
    num_classes: int
    sequence_fields: tuple[str, ...] = ("tokens",)
    per_position: bool = False


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


def check_known_fields(options: Iterable[str], known: Iterable[str]) -> None:
    """Raises UserError naming any `config.task_options` field the task does not have."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(
            f"config.task_options has unknown field(s) {unknown}; valid: {sorted(known)}"
        )


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
    check_known_fields(options, {"source"})
    source = resolve(options.get("source", ""))
    return SourceConfig(name=f"{prefix}_{path_digest(source)}", source=source)
