"""Byte-level IMDb: the reader on a fixture in the release's layout, as a folder and as
aclImdb_v1.tar.gz, LRA's split use, and the errors for missing or malformed sources."""

import os
import tarfile

import numpy as np
import pytest

from research import tasks
from research.errors import UserError
from research.tasks import text

FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "text")


def make_archive(tmp_path) -> str:
    path = str(tmp_path / "aclImdb_v1.tar.gz")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(os.path.join(FIXTURE, "aclImdb"), arcname="aclImdb")
    return path


def expected_reviews(split: str) -> dict[bytes, int]:
    """file bytes -> label, read straight from the fixture folder."""
    reviews = {}
    for label_name, label in (("neg", 0), ("pos", 1)):
        folder = os.path.join(FIXTURE, "aclImdb", split, label_name)
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "rb") as file:
                reviews[file.read()] = label
    return reviews


def read_all(builder) -> dict[str, dict[bytes, int]]:
    return {
        split: {source[i]["tokens"].tobytes(): source[i]["label"] for i in range(len(source))}
        for split, source in tasks.load_sources(builder).items()
    }


@pytest.fixture(scope="module")
def from_folder(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return tasks.prepare_builder(tasks.get_task("text"), dict(source=FIXTURE), data_dir)


def test_folder_reader_keeps_every_byte_and_label(from_folder):
    splits = read_all(from_folder)
    assert splits["train"] == expected_reviews("train")
    # LRA validates and tests on the IMDb test set.
    assert splits["validation"] == splits["test"] == expected_reviews("test")
    assert len(splits["train"]) == 8 and b"Unlabelled" not in b"".join(splits["train"])
    assert any(max(review) > 127 for review in splits["train"])  # UTF-8 bytes, not characters
    longest = max(len(review) for split in ("train", "test") for review in expected_reviews(split))
    assert from_folder.info.metadata["max_length"] == longest


def test_archive_gives_the_same_dataset(tmp_path, from_folder):
    archive = make_archive(tmp_path)
    builder = tasks.prepare_builder(tasks.get_task("text"), dict(source=archive), str(tmp_path))
    assert read_all(builder) == read_all(from_folder)
    # The folder holding the archive works too.
    assert text.resolve_source(str(tmp_path)) == archive


def test_tokens_are_uint8_bytes(from_folder):
    example = tasks.load_sources(from_folder)["train"][0]
    assert example["tokens"].dtype == np.uint8 and example["tokens"].min() > 0


@pytest.mark.parametrize(
    "source, message",
    [
        ("", "config.task_options.source is empty"),
        ("/nonexistent/aclImdb", "does not exist or lacks train/ and test/"),
    ],
)
def test_missing_source_names_the_expected_files(source, message):
    with pytest.raises(UserError, match=message) as error:
        text.builder_config(dict(source=source))
    assert "aclImdb_v1.tar.gz" in str(error.value) and "{pos,neg}" in str(error.value)


def test_malformed_sources(tmp_path):
    not_tar = tmp_path / "aclImdb_v1.tar.gz"
    not_tar.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="is not a tar archive"):
        text.builder_config(dict(source=str(not_tar)))
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(UserError, match="no train/pos or train/neg reviews found"):
        tasks.prepare_builder(
            tasks.get_task("text"), dict(source=str(empty)), str(tmp_path / "tfds")
        )
    with pytest.raises(UserError, match="unknown field"):
        text.builder_config(dict(source=FIXTURE, length=1000))
