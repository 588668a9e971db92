"""Reading the LRA release's Pathfinder folders: `metadata/<n>.npy` text files naming PNG images
and their labels, split 80/10/10 in file order as LRA's builder does."""

import os

import numpy as np

from research.errors import UserError
from research.tasks.common import SPLITS

# The release's folder for each contour length (number of paddles of a target contour).
DIFFICULTY_FOLDERS = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}


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


def metadata_files(folder: str) -> list[str]:
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
    for path in metadata_files(folder):
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
    """LRA's 80/10/10 split of an ordered set of `count` examples (test takes what rounding
    leaves)."""
    train, validation = int(count * 0.8), int(count * 0.1)
    bounds = (0, train, train + validation, count)
    return {split: slice(*bounds[i : i + 2]) for i, split in enumerate(SPLITS)}
