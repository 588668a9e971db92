"""Pathfinder and Path-X (Linsley et al. 2018, as in LRA): are the two marker circles connected?

Images are generated here, or read from the LRA release's Pathfinder folders (PNG images and their
`metadata/<n>.npy` text files). Either way they are stored as flattened uint8 pixels (the tokens,
vocab 256, row-major) in an array_record TFDS dataset.

The generator draws each contour as a chain of short straight segments; each next segment's turn is
drawn with weight cos^2(min(continuity * |turn|, pi/2)) among the directions whose pixels are free.
Two target contours are drawn first, then distractors of a third of their length; one marker circle
sits on the start of target A and one on the far end of A (label 1) or of B (label 0).

Unlike the original's dashed "paddles", segments join without gaps and every object (a contour with
its markers) keeps `gap` clear pixels from every other object. So the label can be read off the
pixels: an 8-connected flood fill from one marker reaches the other exactly when the label is 1.
"""

import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from research.errors import UserError
from research.tasks import common, parallel_generation

NUM_CLASSES = 2
VOCAB_SIZE = 256
RESOLUTIONS = (32, 64, 128)
# The release's folder for each contour length (number of segments of a target contour).
DIFFICULTY_FOLDERS = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}
# Images per unit of parallel generation (a few seconds of work); part of what fixes the data.
CHUNK_SIZE = {32: 500, 64: 200, 128: 50}
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}  # LRA: 80/10/10
NUM_TURNS = 24  # candidate directions per step
SAMPLE_SPACING = 0.5  # pixels between the points that rasterise a segment: keeps it 8-connected
MAX_ATTEMPTS = 500  # redraws of an image whose contours or markers did not fit


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Drawing parameters for one image size (after the table of Linsley et al. used by LRA).

    segment_length: pixels between consecutive pivots of a contour.
    brush_radius: pixels within this distance of the centre line are drawn (0: 1-pixel lines).
    gap: clear pixels between any two objects (so they never touch, even diagonally).
    marker_radius: radius of the marker circles (filled discs).
    seed_distance: the two markers are at least this far apart, so nearness gives nothing away.
    num_distractors: distractor contours attempted per image.
    continuity: larger values favour straighter contours; turns beyond pi / (2 * continuity)
      are never taken.
    """

    segment_length: float
    brush_radius: float
    gap: int
    marker_radius: float
    seed_distance: float
    num_distractors: int
    continuity: float


GEOMETRY = {
    32: Geometry(2.0, 0.0, 1, 1.5, 7.0, 5, 1.0),
    64: Geometry(3.5, 0.0, 1, 2.5, 12.0, 22, 1.8),
    128: Geometry(6.0, 1.0, 2, 4.0, 20.0, 35, 1.8),
}


def _disc(radius: float) -> np.ndarray:
    """offsets_N2: integer (dy, dx) within `radius` of the origin."""
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2 + 1e-9
    return np.stack([dy[keep], dx[keep]], axis=1)


class _Canvas:
    """One image being drawn: the pixels of each object and the pixels no new object may use."""

    def __init__(self, resolution: int, geometry: Geometry):
        self.size = resolution
        self.geometry = geometry
        self.image = np.zeros((resolution, resolution), np.uint8)
        # A frame wider than any segment or marker reaches marks "outside the image", so lookups
        # need no bounds checks.
        self.frame = int(math.ceil(geometry.segment_length + geometry.brush_radius)) + geometry.gap
        self.forbidden = np.ones((resolution + 2 * self.frame,) * 2, bool)
        self.forbidden[self.frame : -self.frame, self.frame : -self.frame] = False
        self.brush = _disc(geometry.brush_radius)
        self.gap_offsets = np.stack(
            np.meshgrid(*[np.arange(-geometry.gap, geometry.gap + 1)] * 2, indexing="ij"), -1
        ).reshape(-1, 2)
        turns = np.arange(NUM_TURNS) * (2 * math.pi / NUM_TURNS)
        self.base_turns = (turns + math.pi) % (2 * math.pi) - math.pi
        points = math.ceil(geometry.segment_length / SAMPLE_SPACING)
        self.fractions = np.arange(points + 1) / points * geometry.segment_length
        far = np.repeat(self.fractions > geometry.segment_length / 2, len(self.brush))
        self.far_from_pivot = np.flatnonzero(far)

    def _lookup(self, grid: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """grid values at pixels (..., 2) within the frame's reach of the image."""
        return grid[pixels[..., 0] + self.frame, pixels[..., 1] + self.frame]

    def dilate_into(self, grid: np.ndarray, pixels: np.ndarray) -> None:
        """Marks every pixel within `gap` (Chebyshev) of `pixels` in a framed grid."""
        near = pixels[:, None, :] + self.gap_offsets[None] + self.frame
        grid[near[..., 0], near[..., 1]] = True

    def free_start(self, rng: np.random.Generator) -> np.ndarray | None:
        inner = slice(self.frame, -self.frame)
        free = np.flatnonzero(~self.forbidden[inner, inner])
        if not len(free):
            return None
        index = free[rng.integers(len(free))]
        return np.array(divmod(int(index), self.size), float)

    def grow(self, rng: np.random.Generator, num_segments: int) -> tuple | None:
        """A contour of `num_segments` segments on free pixels: (pixels_N2, start, end) or None."""
        geometry = self.geometry
        start = self.free_start(rng)
        if start is None:
            return None
        # The contour's earlier segments, so it does not run into itself; only the far half of a
        # new segment is checked against them, as its near half must touch the last one.
        own_old = np.zeros_like(self.forbidden)
        pivot, heading = start, rng.uniform(0, 2 * math.pi)
        segments: list[np.ndarray] = []
        for _ in range(num_segments):
            turns = self.base_turns + rng.uniform(0, 2 * math.pi / NUM_TURNS)
            turns = (turns + math.pi) % (2 * math.pi) - math.pi
            weights = np.cos(np.minimum(geometry.continuity * np.abs(turns), math.pi / 2)) ** 2
            headings = heading + turns
            direction_K2 = np.stack([np.sin(headings), np.cos(headings)], axis=1)
            centres_KS2 = pivot + self.fractions[None, :, None] * direction_K2[:, None, :]
            pixels_KP2 = (
                np.rint(centres_KS2).astype(np.int64)[:, :, None, :] + self.brush[None, None]
            ).reshape(NUM_TURNS, -1, 2)
            far_KQ2 = pixels_KP2[:, self.far_from_pivot]
            blocked = self._lookup(self.forbidden, pixels_KP2).any(axis=1)
            blocked |= self._lookup(own_old, far_KQ2).any(axis=1)
            weights = np.where(blocked, 0.0, weights)
            total = weights.sum()
            if total <= 0:
                return None
            choice = int(np.searchsorted(np.cumsum(weights), rng.uniform(0, total), "right"))
            choice = min(choice, NUM_TURNS - 1)
            if segments:
                self.dilate_into(own_old, segments[-1])
            segments.append(pixels_KP2[choice])
            heading = headings[choice]
            pivot = centres_KS2[choice, -1]
        return np.concatenate(segments), np.rint(start).astype(int), np.rint(pivot).astype(int)

    def marker(self, centre: np.ndarray) -> np.ndarray | None:
        """The marker disc's in-image pixels, or None if it would come near another object."""
        pixels = centre + _disc(self.geometry.marker_radius)
        inside = ((pixels >= 0) & (pixels < self.size)).all(axis=1)
        pixels = pixels[inside]
        if self._lookup(self.forbidden, pixels).any():
            return None
        return pixels

    def add(self, pixels: np.ndarray) -> None:
        """Draws an object and keeps later objects `gap` pixels away from it."""
        self.image[pixels[:, 0], pixels[:, 1]] = 255
        self.dilate_into(self.forbidden, pixels)


def _try_draw(rng: np.random.Generator, resolution: int, contour_length: int, label: int):
    geometry = GEOMETRY[resolution]
    canvas = _Canvas(resolution, geometry)
    target_a = canvas.grow(rng, contour_length)
    if target_a is None:
        return None
    pixels_a, start_a, end_a = target_a
    marker_1 = canvas.marker(start_a)
    objects_a = [pixels_a, marker_1]
    if label == 1:
        objects_a.append(canvas.marker(end_a))
    if any(p is None for p in objects_a):
        return None
    canvas.add(np.concatenate(objects_a))
    target_b = canvas.grow(rng, contour_length)
    if target_b is None:
        return None
    pixels_b, start_b, end_b = target_b
    if label == 1:
        canvas.add(pixels_b)
        centre_2 = end_a
    else:
        centre_2 = end_b if rng.integers(2) else start_b
        marker_2 = canvas.marker(centre_2)
        if marker_2 is None:
            return None
        canvas.add(np.concatenate([pixels_b, marker_2]))
    if np.hypot(*(centre_2 - start_a)) < geometry.seed_distance:
        return None
    distractor_length = max(2, contour_length // 3)
    for _ in range(geometry.num_distractors):
        for _ in range(5):
            distractor = canvas.grow(rng, distractor_length)
            if distractor is not None:
                canvas.add(distractor[0])
                break
    return canvas.image, (tuple(start_a), tuple(centre_2))


def draw_image(
    rng: np.random.Generator, resolution: int, contour_length: int
) -> tuple[np.ndarray, int, tuple]:
    """One example: (image_RR uint8, label, the two marker centres as (row, column) pairs)."""
    label = int(rng.integers(2))
    for _ in range(MAX_ATTEMPTS):
        drawn = _try_draw(rng, resolution, contour_length, label)
        if drawn is not None:
            return drawn[0], label, drawn[1]
    raise RuntimeError(
        f"could not draw a {resolution}x{resolution} Pathfinder image with contour length "
        f"{contour_length} in {MAX_ATTEMPTS} attempts"
    )


@dataclasses.dataclass(frozen=True)
class GeneratorOptions:
    """A generated set (LRA: 200k images per difficulty, split 160k/20k/20k)."""

    resolution: int = 32
    contour_length: int = 14
    num_train: int = 160_000
    num_val: int = 20_000
    num_test: int = 20_000
    seed: int = 0

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(
                    f"config.task_options.{field.name}={value!r} must be an integer >= 0"
                )
        if self.resolution not in RESOLUTIONS:
            raise UserError(
                f"config.task_options.resolution={self.resolution} is not valid; choose one of: "
                f"{', '.join(map(str, RESOLUTIONS))}"
            )
        if self.contour_length < 2:
            raise UserError(
                f"config.task_options.contour_length={self.contour_length} must be at least 2 "
                "(LRA uses 6, 9 and 14)"
            )
        for field in ("num_train", "num_val", "num_test"):
            if getattr(self, field) < 1:
                raise UserError(
                    f"config.task_options.{field}=0: every split needs at least one example"
                )


def make_chunk(
    options: GeneratorOptions, seed_sequence: np.random.SeedSequence, count: int
) -> list[tuple[np.ndarray, int]]:
    """`count` examples (flat pixels, label) from one seed: a unit of parallel generation."""
    rng = np.random.default_rng(seed_sequence)
    examples = []
    for _ in range(count):
        image, label, _ = draw_image(rng, options.resolution, options.contour_length)
        examples.append((image.reshape(-1), label))
    return examples


# ----------------------------------------------------------------------------- the LRA release


def release_folder(release_dir: str, resolution: int, contour_length: int) -> str:
    """The folder holding `imgs/` and `metadata/` for one size and difficulty.

    `release_dir` may be the folder above `pathfinder<R>/` (e.g. `lra_release/`), the
    `pathfinder<R>/` folder itself, or the difficulty folder (e.g. `curv_contour_length_14/`).
    """
    difficulty = DIFFICULTY_FOLDERS.get(contour_length)
    if difficulty is None:
        raise UserError(
            f"config.task_options.contour_length={contour_length}: the LRA release has contour "
            f"lengths {sorted(DIFFICULTY_FOLDERS)} only"
        )
    candidates = [
        os.path.join(release_dir, f"pathfinder{resolution}", difficulty),
        os.path.join(release_dir, difficulty),
        release_dir,
    ]
    for folder in candidates:
        if os.path.isdir(os.path.join(folder, "metadata")):
            return folder
    raise UserError(
        f"config.task_options.release_dir={release_dir!r}: no Pathfinder folder found; expected "
        f"{candidates[0]}/ holding imgs/<n>/sample_<k>.png (PNG, {resolution}x{resolution} "
        "grayscale) and metadata/<n>.npy (text lines 'imgs/<n> sample_<k>.png <k> <label> ...')"
    )


def _metadata_files(folder: str) -> list[str]:
    metadata = os.path.join(folder, "metadata")
    names = [n for n in os.listdir(metadata) if n.endswith(".npy")]
    if not names:
        raise UserError(
            f"{metadata} holds no <n>.npy files; expected text lines "
            "'imgs/<n> sample_<k>.png <k> <label> ...'"
        )
    stems = [n[: -len(".npy")] for n in names]
    order = sorted(range(len(names)), key=lambda i: (not stems[i].isdigit(), stems[i].zfill(12)))
    return [os.path.join(metadata, names[i]) for i in order]


def read_release_index(folder: str) -> list[tuple[str, int]]:
    """(image path, label) for every metadata line, in file order; checks each image exists."""
    index = []
    for path in _metadata_files(folder):
        with open(path, encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                fields = line.split()
                if not fields:
                    continue
                where = f"{path}:{line_number}"
                if len(fields) < 4 or fields[3] not in ("0", "1"):
                    raise UserError(
                        f"{where}: expected 'imgs/<n> sample_<k>.png <k> <label 0 or 1> ...', "
                        f"found {line.strip()[:80]!r}"
                    )
                image = os.path.join(folder, fields[0], fields[1])
                if not os.path.isfile(image):
                    raise UserError(f"{where}: image {image} is missing (expected a PNG file)")
                index.append((image, int(fields[3])))
    return index


def read_png(path: str, resolution: int) -> np.ndarray:
    """A grayscale PNG as flat uint8 pixels; anything else is a UserError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path}: not a readable PNG image ({error})") from None
    if pixels.shape != (resolution, resolution):
        raise UserError(
            f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, expected "
            f"{resolution}x{resolution} (config.task_options.resolution)"
        )
    return pixels.reshape(-1)


def split_index(count: int) -> dict[str, slice]:
    """LRA's 80/10/10 split of an ordered set of `count` examples."""
    train = int(count * SPLIT_FRACTIONS["train"])
    validation = int(count * SPLIT_FRACTIONS["validation"])
    return {
        "train": slice(0, train),
        "validation": slice(train, train + validation),
        "test": slice(train + validation, count),
    }


# ----------------------------------------------------------------------------- the builder


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
    release_dir = options.pop("release_dir", "")
    num_workers = options.pop("num_workers", 0)
    if not isinstance(num_workers, int) or num_workers < 0:
        raise UserError(
            f"config.task_options.num_workers={num_workers!r} must be an integer >= 0 "
            "(0 = every core)"
        )
    known = {field.name for field in dataclasses.fields(GeneratorOptions)}
    common.check_known_fields(options, known | {"release_dir", "num_workers"})
    generator = GeneratorOptions(**options)
    generator.validate()
    g = generator
    if release_dir:
        release_dir = os.path.abspath(os.path.expanduser(release_dir))
        folder = release_folder(release_dir, g.resolution, g.contour_length)
        _metadata_files(folder)
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
    VERSION = tfds.core.Version("1.0.0")
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
