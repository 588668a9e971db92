"""Pathfinder: labels recoverable from the pixels by flood fill, determinism independent of the
worker count, the builder's splits, the LRA release reader on files in the release's layout, and
its errors (including that a failed build leaves no dataset behind)."""

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


def connected(image: np.ndarray, a: tuple, b: tuple) -> bool:
    """Whether an 8-connected flood fill over the drawn (non-zero) pixels joins a and b."""
    components, _ = ndimage.label(image > 0, structure=EIGHT_NEIGHBOURS)
    return components[a] != 0 and components[a] == components[b]


def check_flood_fill(resolution: int, contour_length: int, count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(count):
        image, label, (marker_1, marker_2) = pathfinder.draw_image(rng, resolution, contour_length)
        assert image.shape == (resolution, resolution) and image.dtype == np.uint8
        assert image[marker_1] == 255 and image[marker_2] == 255
        assert connected(image, marker_1, marker_2) == bool(label)
        labels.append(label)
    return labels


@pytest.mark.slow
def test_flood_fill_from_one_marker_reaches_the_other_exactly_when_label_is_1():
    labels = check_flood_fill(32, 14, 3_000, seed=0)
    assert 0.45 < np.mean(labels) < 0.55


@pytest.mark.slow
@pytest.mark.parametrize(
    "resolution, contour_length, count", [(32, 6, 300), (32, 9, 300), (64, 14, 100), (128, 14, 20)]
)
def test_flood_fill_holds_at_every_size_and_difficulty(resolution, contour_length, count):
    labels = check_flood_fill(resolution, contour_length, count, seed=resolution + contour_length)
    assert 0 < sum(labels) < count


def test_contours_are_longer_at_higher_difficulty():
    def ink(contour_length):
        rng = np.random.default_rng(0)
        return np.mean(
            [(pathfinder.draw_image(rng, 32, contour_length)[0] > 0).mean() for _ in range(50)]
        )

    assert ink(6) < ink(9) < ink(14)


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
