"""Grayscale CIFAR-10: the reader on tiny batches in the CIFAR-10 python format (written here as
pickles, as a folder and as cifar-10-python.tar.gz), the gray conversion, LRA's 90/10 split, and
the errors for missing or malformed batches."""

import os
import pickle
import tarfile

import numpy as np
import pytest
from cifar_fixture import write_cifar

from research import tasks
from research.errors import UserError
from research.tasks import image


def gray(data_N3072: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale on uint8, from TF's source, written apart from the module's:
    convert_image_dtype to float32 (x * (1/255)), the weighted sum, then
    convert_image_dtype back (x * 255.5, cast to uint8: truncation)."""
    scale = np.float32(1.0) / np.float32(255.0)
    red, green, blue = (
        data_N3072[:, i * 1024 : (i + 1) * 1024].astype(np.float32) * scale for i in range(3)
    )
    weights = [np.float32(w) for w in (0.2989, 0.5870, 0.1140)]
    gray_float = weights[0] * red + weights[1] * green + weights[2] * blue
    return (gray_float * np.float32(255.5)).astype(np.uint8)


def read_all(builder) -> dict[str, list]:
    return {
        split: [(s[i]["tokens"], s[i]["label"]) for i in range(len(s))]
        for split, s in tasks.load_sources(builder).items()
    }


def as_set(examples) -> set:
    return {(tokens.tobytes(), int(label)) for tokens, label in examples}


def test_gray_weights_on_pure_colours():
    pure = np.zeros((3, 3072), np.uint8)
    for channel in range(3):
        pure[channel, channel * 1024 : (channel + 1) * 1024] = 255
    # truncated, not rounded: 0.2989, 0.587, 0.114 times 255.5 are 76.37, 149.98, 29.13
    np.testing.assert_array_equal(image.to_gray(pure)[:, 0], [76, 149, 29])


def test_gray_levels_are_truncated_as_tf_does_on_every_colour_level():
    """All 256 levels of each pure channel and of gray inputs against TF's formula; a gray pixel
    (r = g = b = x) stays x, since the weights sum to 0.9999 and 255.5 / 255 lifts it back."""
    levels = np.arange(256, dtype=np.uint8)
    for channel in range(3):
        pure = np.zeros((256, 3072), np.uint8)
        pure[:, channel * 1024] = levels
        np.testing.assert_array_equal(image.to_gray(pure)[:, 0], gray(pure)[:, 0])
    grey = np.repeat(levels[:, None], 3072, axis=1)
    np.testing.assert_array_equal(image.to_gray(grey)[:, 0], levels)


def test_folder_and_archive_readers_give_lra_splits(tmp_path):
    folder, batches = write_cifar(tmp_path / "extracted")
    train = [
        (tokens, label)
        for name in image.TRAIN_BATCHES
        for tokens, label in zip(gray(batches[name][0]), batches[name][1], strict=True)
    ]
    test = list(zip(gray(batches["test_batch"][0]), batches["test_batch"][1], strict=True))
    builder = tasks.prepare_builder(
        tasks.get_task("image"), dict(source=folder), str(tmp_path / "tfds")
    )
    splits = read_all(builder)
    assert as_set(splits["train"]) == as_set(train[:18])  # the first 90% of the training images
    assert as_set(splits["validation"]) == as_set(train[18:])
    assert as_set(splits["test"]) == as_set(test)
    assert builder.info.metadata["max_length"] == 1024
    assert splits["train"][0][0].dtype == np.uint8 and splits["train"][0][0].shape == (1024,)

    archive = str(tmp_path / "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=image.FOLDER)
    from_archive = read_all(
        tasks.prepare_builder(tasks.get_task("image"), dict(source=archive), str(tmp_path / "t2"))
    )
    assert {k: as_set(v) for k, v in from_archive.items()} == {
        k: as_set(v) for k, v in splits.items()
    }
    # The folder above the extracted one, and the folder holding the archive, work too.
    assert image.resolve_source(str(tmp_path / "extracted")) == folder
    assert image.resolve_source(str(tmp_path)) == archive


def test_missing_sources_name_the_expected_files(tmp_path):
    with pytest.raises(UserError, match="source is empty"):
        image.builder_config({})
    with pytest.raises(
        UserError, match=r"does not hold CIFAR-10; expected cifar-10-python\.tar\.gz"
    ):
        image.builder_config(dict(source=str(tmp_path)))
    folder, _ = write_cifar(tmp_path / "x")
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(UserError, match=r"data_batch_3 is missing"):
        image.builder_config(dict(source=folder))


def test_malformed_batches_are_user_errors(tmp_path):
    folder, _ = write_cifar(tmp_path / "x")
    with open(os.path.join(folder, "test_batch"), "wb") as file:
        file.write(b"garbage")
    with pytest.raises(UserError, match=r"test_batch: not a CIFAR-10 python batch"):
        tasks.prepare_builder(tasks.get_task("image"), dict(source=folder), str(tmp_path / "t"))
    with open(os.path.join(folder, "test_batch"), "wb") as file:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, file)
    with pytest.raises(UserError, match=r"shape \(2, 100\).*N x 3072"):
        tasks.prepare_builder(tasks.get_task("image"), dict(source=folder), str(tmp_path / "t"))
    written = [n for _, _, names in os.walk(tmp_path / "t") for n in names]
    assert not [n for n in written if "array_record" in n or n == "dataset_info.json"]
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(os.path.join(folder, "data_batch_1"), arcname=f"{image.FOLDER}/data_batch_1")
    with pytest.raises(UserError, match=r"lacks cifar-10-batches-py/data_batch_2"):
        tasks.prepare_builder(
            tasks.get_task("image"), dict(source=str(archive)), str(tmp_path / "t3")
        )
