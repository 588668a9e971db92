"""Pathfinder: the label checked independently of the generator (its contours redrawn without
gaps and flood-filled from one marker), the dashed anti-aliased look, determinism independent of
the worker count, the builder's splits, the LRA release reader on files in the release's layout,
and its errors (including that a failed build leaves no dataset behind)."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from research import tasks
from research.errors import UserError
from research.tasks import parallel_generation, pathfinder

FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "pathfinder")
FIXTURE_FOLDER = os.path.join(FIXTURE, "pathfinder32", "curv_contour_length_14")
TINY = dict(resolution=32, contour_length=14, num_train=40, num_val=6, num_test=6, seed=3)
EIGHT_NEIGHBOURS = np.ones((3, 3), int)
FINE = 4  # the solid redraw's cells per pixel


def fine_cells(points: np.ndarray) -> np.ndarray:
    """(row, column) indices of the fine cells holding pixel points (..., 2), pixel centres at
    integers."""
    return np.floor((points + 0.5) * FINE).astype(int)


def solid_redraw(drawing: pathfinder.Drawing) -> np.ndarray:
    """A bool grid FINE times finer than the image where every contour is drawn as one unbroken
    polyline: each paddle, then the gap to the next paddle's start, and so on."""
    size = drawing.image.shape[0] * FINE
    grid = np.zeros((size, size), bool)
    steps = np.linspace(0.0, 1.0, 129)[:, None]  # under half a cell apart: 8-connected
    for paddles in drawing.paddles:
        chain = paddles.reshape(-1, 2)
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            cells = fine_cells(a + steps * (b - a))
            grid[cells[:, 0], cells[:, 1]] = True
    return grid


def markers_joined(drawing: pathfinder.Drawing) -> bool:
    """Whether an 8-connected flood fill from one marker's centre over the solid redraw reaches
    the other's. Both centres must lie on a contour."""
    grid = solid_redraw(drawing)
    (row_1, column_1), (row_2, column_2) = fine_cells(drawing.markers)
    assert grid[row_1, column_1] and grid[row_2, column_2]
    components, _ = ndimage.label(grid, structure=EIGHT_NEIGHBOURS)
    return components[row_1, column_1] == components[row_2, column_2]


def check_labels(resolution: int, contour_length: int, count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(count):
        drawing = pathfinder.draw_image(rng, resolution, contour_length)
        assert drawing.image.shape == (resolution, resolution)
        assert drawing.image.dtype == np.uint8
        assert markers_joined(drawing) == bool(drawing.label)
        labels.append(drawing.label)
    return labels


@pytest.mark.slow
def test_label_is_whether_the_contours_redrawn_without_gaps_join_the_markers():
    labels = check_labels(32, 14, 1_000, seed=0)
    assert 0.45 < np.mean(labels) < 0.55


@pytest.mark.slow
@pytest.mark.parametrize(
    "resolution, contour_length, count", [(32, 6, 200), (32, 9, 200), (64, 14, 60), (128, 14, 40)]
)
def test_label_holds_at_every_size_and_difficulty(resolution, contour_length, count):
    labels = check_labels(resolution, contour_length, count, seed=resolution + contour_length)
    assert 0 < sum(labels) < count


def distances_to_segments(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """distances_PS from points (P, 2) to segments (S, 2, 2)."""
    start, span = segments[:, 0], segments[:, 1] - segments[:, 0]
    offset = points[:, None] - start
    along = np.clip((offset * span).sum(-1) / (span * span).sum(-1), 0, 1)
    return np.linalg.norm(offset - along[..., None] * span, axis=-1)


@pytest.mark.parametrize("resolution", pathfinder.RESOLUTIONS)
def test_image_shows_the_dashed_paddles_and_round_markers(resolution):
    geometry = pathfinder.GEOMETRY[resolution]
    rng = np.random.default_rng(resolution)
    centres = np.stack(np.mgrid[:resolution, :resolution], -1).reshape(-1, 2).astype(float)
    on_paddles, in_gaps = [], []
    for _ in range(10):
        drawing = pathfinder.draw_image(rng, resolution, 14)
        image = drawing.image.astype(float).reshape(-1)
        assert len(drawing.paddles) > 2  # distractors
        # The markers are white discs: white at their centres and wherever a pixel lies inside,
        markers = np.rint(drawing.markers).astype(int)
        assert (drawing.image[markers[:, 0], markers[:, 1]] == 255).all()
        marker_distance = np.linalg.norm(centres[:, None] - drawing.markers, axis=-1).min(1)
        assert (image[marker_distance < geometry.marker_radius - 0.75] == 255).all()
        # and nothing is drawn but them and the paddles (anti-aliased: within a pixel's reach).
        segments = np.concatenate(drawing.paddles)
        near_paddle = distances_to_segments(centres, segments).min(1) < geometry.thickness / 2 + 1
        assert (image[~near_paddle & (marker_distance > geometry.marker_radius + 1)] == 0).all()
        # Paddles are drawn, and the gaps between consecutive ones are (nearly) dark.
        far = marker_distance > geometry.marker_radius + 2
        for paddles in drawing.paddles:
            middles = fine_cells(paddles.mean(1)) // FINE
            gaps = fine_cells((paddles[:-1, 1] + paddles[1:, 0]) / 2) // FINE
            on_paddles += [image[r * resolution + c] for r, c in middles if far[r * resolution + c]]
            in_gaps += [image[r * resolution + c] for r, c in gaps if far[r * resolution + c]]
    assert min(on_paddles) > 0
    assert np.mean(in_gaps) < 0.5 * np.mean(on_paddles)


def test_contours_are_longer_at_higher_difficulty():
    def ink(contour_length):
        rng = np.random.default_rng(0)
        images = [pathfinder.draw_image(rng, 32, contour_length).image for _ in range(30)]
        return np.mean([image.astype(float).sum() for image in images])

    assert ink(6) < ink(9) < ink(14)


def test_example_grid_has_two_rows_per_size_of_label_1_then_label_0_examples():
    grid = pathfinder.example_grid(per_label=1, tile=128)
    gap, middle = 128 // 32, 128 // 8
    assert grid.dtype == np.uint8
    assert grid.shape == (6 * (128 + gap) + gap, 2 * 128 + middle + 2 * gap)
    # Nearest-neighbour upscaling: the 32 x 32 tiles are made of 4 x 4 blocks.
    tile = grid[gap : gap + 128, gap : gap + 128]
    np.testing.assert_array_equal(tile, np.kron(tile[::4, ::4], np.ones((4, 4), np.uint8)))


@pytest.mark.slow
def test_parallel_generation_does_not_depend_on_workers():
    options = pathfinder.GeneratorOptions(**TINY)
    kwargs = dict(total=23, seed=5, stream=1, chunk_size=6)
    serial = list(
        parallel_generation.generate(pathfinder.make_chunk, options, num_workers=1, **kwargs)
    )
    parallel = list(
        parallel_generation.generate(pathfinder.make_chunk, options, num_workers=2, **kwargs)
    )
    assert len(serial) == len(parallel) == 23
    for (tokens_a, label_a), (tokens_b, label_b) in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(tokens_a, tokens_b)
        assert label_a == label_b
    other_stream = list(
        parallel_generation.generate(
            pathfinder.make_chunk, options, num_workers=1, **{**kwargs, "stream": 2}
        )
    )
    assert not np.array_equal(serial[0][0], other_stream[0][0])
    # A consumer may stop early: the pool is shut down and the first examples are still the same.
    partial = parallel_generation.generate(pathfinder.make_chunk, options, num_workers=2, **kwargs)
    first = [next(partial) for _ in range(3)]
    partial.close()
    for (tokens_a, _), (tokens_b, _) in zip(first, serial[:3], strict=True):
        np.testing.assert_array_equal(tokens_a, tokens_b)


def test_chunk_counts():
    assert parallel_generation.chunk_counts(10, 4) == [4, 4, 2]
    assert parallel_generation.chunk_counts(8, 4) == [4, 4]
    assert parallel_generation.chunk_counts(0, 4) == []


def read_all(builder) -> dict[str, list]:
    sources = tasks.load_sources(builder)
    return {split: [source[i] for i in range(len(source))] for split, source in sources.items()}


def test_generated_builder_splits_metadata_and_determinism(tmp_path):
    task = tasks.get_task("pathfinder")
    first = read_all(tasks.prepare_builder(task, TINY, str(tmp_path / "a")))
    builder = tasks.prepare_builder(task, {**TINY, "num_workers": 2}, str(tmp_path / "b"))
    second = read_all(builder)
    assert builder.info.metadata["max_length"] == 32 * 32
    assert {split: len(examples) for split, examples in first.items()} == {
        "train": 40,
        "validation": 6,
        "test": 6,
    }
    for split in first:
        for a, b in zip(first[split], second[split], strict=True):
            assert a["tokens"].dtype == np.uint8 and a["tokens"].shape == (1024,)
            np.testing.assert_array_equal(a["tokens"], b["tokens"])
            assert a["label"] == b["label"]
    assert not np.array_equal(first["train"][0]["tokens"], first["test"][0]["tokens"])


def fixture_index() -> list[tuple[str, int]]:
    """(png path, label) in the order the metadata files list them, read independently."""
    index = []
    for number in (0, 1):
        with open(os.path.join(FIXTURE_FOLDER, "metadata", f"{number}.npy")) as file:
            for line in file:
                folder, name, _, label, *_ = line.split()
                index.append((os.path.join(FIXTURE_FOLDER, folder, name), int(label)))
    return index


@pytest.mark.parametrize("release_dir", [FIXTURE, FIXTURE_FOLDER])
def test_release_reader_on_fixture(tmp_path, release_dir):
    options = dict(resolution=32, contour_length=14, release_dir=release_dir)
    builder = tasks.prepare_builder(tasks.get_task("pathfinder"), options, str(tmp_path))
    splits = read_all(builder)
    assert {split: len(examples) for split, examples in splits.items()} == {
        "train": 16,
        "validation": 2,
        "test": 2,
    }
    # TFDS stores a split in the order of its hashed keys, so examples are matched by content.
    index = fixture_index()
    expected = {}
    for split, part in pathfinder.split_index(len(index)).items():
        for path, label in index[part]:
            pixels = np.asarray(Image.open(path)).reshape(-1)
            expected[split, pixels.tobytes()] = label
    found = {
        (split, example["tokens"].tobytes()): example["label"]
        for split, examples in splits.items()
        for example in examples
    }
    assert found == expected
    assert builder.info.metadata["max_length"] == 1024


def test_missing_release_folder_names_the_expected_layout(tmp_path):
    with pytest.raises(UserError, match=r"pathfinder32/curv_contour_length_14/ holding imgs/"):
        pathfinder.builder_config(dict(release_dir=str(tmp_path), resolution=32))
    with pytest.raises(UserError, match="contour lengths"):
        pathfinder.builder_config(dict(release_dir=FIXTURE, contour_length=7))


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="resolution=48"):
        pathfinder.builder_config(dict(resolution=48))
    with pytest.raises(UserError, match="unknown field"):
        pathfinder.builder_config(dict(size=32))
    with pytest.raises(UserError, match="num_workers"):
        pathfinder.builder_config(dict(num_workers=-1))
    with pytest.raises(UserError, match="num_val=0: every split needs at least one example"):
        pathfinder.builder_config(dict(num_val=0))


def test_contours_too_long_to_fit_are_a_user_error():
    with pytest.raises(UserError, match=r"contour_length=60: .* did not fit a 32x32 image"):
        pathfinder.draw_image(np.random.default_rng(0), 32, 60)


def copy_fixture(tmp_path) -> str:
    folder = str(tmp_path / "release" / "curv_contour_length_14")
    shutil.copytree(FIXTURE_FOLDER, folder)
    return folder


def assert_nothing_written(data_dir) -> None:
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(data_dir)
        for name in names
        if "array_record" in name or name == "dataset_info.json"
    ]
    assert found == []


def test_malformed_metadata_line_names_file_and_line(tmp_path):
    folder = copy_fixture(tmp_path)
    with open(os.path.join(folder, "metadata", "1.npy"), "a") as file:
        file.write("imgs/1 sample_10.png 10\n")
    with pytest.raises(UserError, match=r"1\.npy:11: expected 'imgs/<n> sample_<k>\.png"):
        tasks.prepare_builder(
            tasks.get_task("pathfinder"), dict(release_dir=folder), str(tmp_path / "tfds")
        )
    assert_nothing_written(tmp_path / "tfds")


def test_missing_image_is_reported_before_writing(tmp_path):
    folder = copy_fixture(tmp_path)
    os.remove(os.path.join(folder, "imgs", "1", "sample_3.png"))
    with pytest.raises(UserError, match=r"sample_3\.png is missing \(expected a PNG file\)"):
        tasks.prepare_builder(
            tasks.get_task("pathfinder"), dict(release_dir=folder), str(tmp_path / "tfds")
        )
    assert_nothing_written(tmp_path / "tfds")


def test_failed_build_midway_leaves_no_dataset(tmp_path):
    folder = copy_fixture(tmp_path)
    # A wrong-sized image deep in the test split fails only while writing.
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(
        os.path.join(folder, "imgs", "1", "sample_9.png")
    )
    with pytest.raises(UserError, match=r"sample_9\.png: image is 16x16, expected 32x32"):
        tasks.prepare_builder(
            tasks.get_task("pathfinder"), dict(release_dir=folder), str(tmp_path / "tfds")
        )
    assert_nothing_written(tmp_path / "tfds")
    with open(os.path.join(folder, "imgs", "1", "sample_8.png"), "wb") as file:
        file.write(b"not a png")
    with pytest.raises(UserError, match=r"sample_8\.png: not a readable PNG image"):
        pathfinder.read_png(os.path.join(folder, "imgs", "1", "sample_8.png"), 32)
