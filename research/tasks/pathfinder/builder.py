"""The Pathfinder TFDS builder: a generated set (`GeneratorOptions`, drawn by `drawing`) or the LRA
release (`release`), stored as flat uint8 pixels (the tokens, vocab 256, row-major) and a label."""

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError, check_choice, check_positive
from research.tasks import common, parallel_generation
from research.tasks.pathfinder.drawing import RESOLUTIONS, draw_image
from research.tasks.pathfinder.release import (
    metadata_files,
    read_png,
    read_release_index,
    release_folder,
    split_index,
)

NUM_CLASSES = 2
VOCAB_SIZE = 256
# Images per unit of parallel generation (a few seconds of work); part of what fixes the data.
CHUNK_SIZE = {32: 500, 64: 200, 128: 50}


@dataclasses.dataclass(frozen=True)
class GeneratorOptions:
    """A generated set (LRA: 200k images per difficulty, split 160k/20k/20k)."""

    resolution: int = 32
    contour_length: int = 14
    num_train: int = 160_000
    num_val: int = 20_000
    num_test: int = 20_000
    seed: int = 0

    def check(self, field: str) -> None:
        common.check_counts(self, field)
        check_choice(f"{field}.resolution", self.resolution, RESOLUTIONS)
        if self.contour_length < 2:
            raise UserError(
                f"{field}.contour_length={self.contour_length} must be at least 2 (LRA uses 6, 9 "
                "and 14)"
            )


def make_chunk(
    options: GeneratorOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, int]]:
    """`count` examples (flat pixels, label) from one seed: a unit of parallel generation."""
    rng = np.random.default_rng(seed_sequence)
    examples = []
    for _ in range(count):
        drawing = draw_image(rng, options.resolution, options.contour_length)
        examples.append((drawing.image.reshape(-1), drawing.label))
    return examples


@dataclasses.dataclass
class PathfinderConfig(tfds.core.BuilderConfig):
    """A generated dataset (`generator`) or the release folder `release_folder`.

    num_workers changes only the speed of generation, never its output, so it is not in the name.
    """

    generator: GeneratorOptions = dataclasses.field(default_factory=GeneratorOptions)
    release_folder: str = ""
    num_workers: int = 0


def builder_config(task_options) -> PathfinderConfig:
    """The builder config for `config.task_options`, named so each variant gets its own folder."""
    options = dict(task_options)
    generator = g = common.parse_options(
        GeneratorOptions, options, other=("release_dir", "num_workers")
    )
    release_dir, num_workers = options.get("release_dir", ""), options.get("num_workers", 0)
    check_positive(f"{common.OPTIONS_FIELD}.num_workers", num_workers, allow_zero=True)
    if release_dir:
        release_dir = os.path.abspath(os.path.expanduser(release_dir))
        folder = release_folder(release_dir, g.resolution, g.contour_length)
        metadata_files(folder)
        digest = common.path_digest(folder)
        return PathfinderConfig(
            name=f"release{g.resolution}_len{g.contour_length}_{digest}",
            generator=generator,
            release_folder=folder,
        )
    name = (
        f"generated{g.resolution}_len{g.contour_length}_train{g.num_train}_val{g.num_val}_"
        f"test{g.num_test}_seed{g.seed}"
    )
    return PathfinderConfig(name=name, generator=generator, num_workers=num_workers)


class Pathfinder(tfds.core.GeneratorBasedBuilder):
    """Pathfinder images as flat uint8 pixels ("tokens") and a label (1 = markers connected)."""

    name = "lra_pathfinder"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "2.0.0": "Images as Linsley et al. draw them: dashed anti-aliased paddles, round markers.",
    }
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        return common.classification_info(self, num_classes=NUM_CLASSES)

    def _split_generators(self, dl_manager):
        config: PathfinderConfig = self.builder_config
        resolution = config.generator.resolution
        self.info.metadata["max_length"] = resolution * resolution
        if config.release_folder:
            index = read_release_index(config.release_folder)
            return {
                split: self._read_release(index[part], resolution)
                for split, part in split_index(len(index)).items()
            }
        g = config.generator
        sizes = {"train": g.num_train, "validation": g.num_val, "test": g.num_test}
        return {
            split: self._generate_examples(g, stream, size, config.num_workers)
            for stream, (split, size) in enumerate(sizes.items())
        }

    @staticmethod
    def _generate_examples(
        options: GeneratorOptions, stream: int, size: int, num_workers: int
    ) -> Iterator:
        examples = parallel_generation.generate(
            make_chunk,
            options,
            total=size,
            seed=options.seed,
            stream=stream,
            chunk_size=CHUNK_SIZE[options.resolution],
            num_workers=num_workers,
        )
        for index, (tokens, label) in enumerate(examples):
            yield index, {"tokens": tokens, "label": label}

    @staticmethod
    def _read_release(index: list[tuple[str, int]], resolution: int) -> Iterator:
        for key, (path, label) in enumerate(index):
            yield key, {"tokens": read_png(path, resolution), "label": label}


TASK = common.Task(
    name="pathfinder",
    builder_class=Pathfinder,
    builder_config=builder_config,
    default_options=lambda: {
        **dataclasses.asdict(GeneratorOptions()),
        "num_workers": 0,  # 0 = every core; the data do not depend on it
        "release_dir": "",
    },
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
)
