"""AAN Retrieval: the reader on TSV files in the LRA release's format, its errors, and the two-tower
model (one shared encoder, [u, v, u*v, u-v] into the classifier)."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import retrieval as retrieval_config
from research import tasks
from research.errors import UserError
from research.models import ModelConfig, build_model
from research.models.heads import TwoTower, pool
from research.tasks import retrieval

FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "retrieval")


def expected_rows(name: str) -> set[tuple[bytes, bytes, int]]:
    rows = set()
    with open(os.path.join(FIXTURE, name), encoding="utf-8") as file:
        for line in file:
            label, _, _, text1, text2 = line.rstrip("\n").split("\t")
            rows.add((text1.encode(), text2.encode(), int(float(label))))
    return rows


def test_reader_on_release_files(tmp_path):
    builder = tasks.prepare_builder(
        tasks.get_task("retrieval"), dict(release_dir=FIXTURE), str(tmp_path)
    )
    sources = tasks.load_sources(builder)
    for split, name in retrieval.RELEASE_FILES.items():
        source = sources[split]
        rows = {
            (source[i]["tokens1"].tobytes(), source[i]["tokens2"].tobytes(), source[i]["label"])
            for i in range(len(source))
        }
        assert rows == expected_rows(name)
    longest = max(
        max(len(a), len(b))
        for name in retrieval.RELEASE_FILES.values()
        for a, b, _ in expected_rows(name)
    )
    assert builder.info.metadata["max_length"] == longest


def test_missing_folder_and_files_name_what_is_expected(tmp_path):
    with pytest.raises(UserError, match="release_dir is empty"):
        retrieval.builder_config({})
    with pytest.raises(UserError, match=r"is not a folder; expected .*new_aan_pairs\.train\.tsv"):
        retrieval.builder_config(dict(release_dir=str(tmp_path / "nowhere")))
    shutil.copy(os.path.join(FIXTURE, "new_aan_pairs.train.tsv"), tmp_path)
    with pytest.raises(UserError, match=r"new_aan_pairs\.eval\.tsv is missing"):
        retrieval.builder_config(dict(release_dir=str(tmp_path)))


def test_malformed_line_names_file_and_line_and_leaves_no_dataset(tmp_path):
    folder = tmp_path / "tsv"
    shutil.copytree(FIXTURE, folder)
    with open(folder / "new_aan_pairs.test.tsv", "a", encoding="utf-8") as file:
        file.write("1\tD07-1018\tonly three columns\n")
    with pytest.raises(UserError, match=r"new_aan_pairs\.test\.tsv:5: expected '<label 0/1>"):
        tasks.prepare_builder(
            tasks.get_task("retrieval"), dict(release_dir=str(folder)), str(tmp_path / "tfds")
        )
    written = [name for _, _, names in os.walk(tmp_path / "tfds") for name in names]
    assert not [n for n in written if "array_record" in n or n == "dataset_info.json"]


def test_empty_file_is_a_user_error(tmp_path):
    folder = tmp_path / "tsv"
    shutil.copytree(FIXTURE, folder)
    (folder / "new_aan_pairs.eval.tsv").write_text("")
    with pytest.raises(UserError, match=r"new_aan_pairs\.eval\.tsv holds no pairs"):
        tasks.prepare_builder(
            tasks.get_task("retrieval"), dict(release_dir=str(folder)), str(tmp_path / "tfds")
        )


def test_labels_written_as_floats_or_ints():
    assert [retrieval.parse_label(s) for s in ("0", "1", "0.0", "1.0", "2", "x")] == [
        0,
        1,
        0,
        1,
        None,
        None,
    ]


def tiny_two_tower():
    config = retrieval_config.get_config("size=tiny").model
    # The interaction head; LRA's [u, v] head is tested in tests/models/test_heads.py.
    config.update(vocab_size=256, num_classes=2, max_len=12, two_tower_head="interaction")
    config = ModelConfig.from_config(config)
    return config, build_model(config, rngs=nnx.Rngs(0))


def batch_of(tokens1, tokens2):
    tokens1, tokens2 = jnp.asarray(tokens1), jnp.asarray(tokens2)
    return {"tokens1": tokens1, "mask1": tokens1 > 0, "tokens2": tokens2, "mask2": tokens2 > 0}


@pytest.mark.slow
def test_two_tower_shares_one_encoder_and_combines_u_v():
    config, model = tiny_two_tower()
    assert isinstance(model, TwoTower)
    rng = np.random.default_rng(0)
    tokens1 = rng.integers(1, 256, (3, 12))
    tokens2 = rng.integers(1, 256, (3, 12))
    tokens2[:, 8:] = 0  # padding in the second document

    @nnx.jit
    def outputs(model, batch, swapped):
        def pooled(tokens, mask):
            encoded, encoded_mask = model.encoder(tokens, mask, deterministic=True, rngs=None)
            return pool(encoded, encoded_mask, config.pool)

        u = pooled(batch["tokens1"], batch["mask1"])
        v = pooled(batch["tokens2"], batch["mask2"])
        expected = model.head(jnp.concatenate([u, v, u * v, u - v], axis=-1))
        return model(batch), expected, model(swapped)

    logits_BC, expected, swapped = outputs(
        model, batch_of(tokens1, tokens2), batch_of(tokens2, tokens1)
    )
    assert logits_BC.shape == (3, 2)
    np.testing.assert_allclose(logits_BC, expected, rtol=1e-5, atol=1e-5)
    # The order of the documents matters only through u - v.
    assert not np.allclose(swapped, logits_BC)
    # One encoder: its parameters appear once.
    encoders = [path for path, _ in nnx.iter_graph(model) if path and path[-1] == "encoder"]
    assert encoders == [("encoder",)]
