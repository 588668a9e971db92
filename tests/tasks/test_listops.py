"""ListOps: generated labels against an independent evaluator, lengths, duplicates, determinism, the
LRA release reader on files in the release's exact format, and its errors."""

import os
import shutil

import numpy as np
import pytest

from research import tasks
from research.errors import UserError
from research.tasks import listops

FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "listops")
TINY = dict(num_train=300, num_val=50, num_test=50, min_length=10, max_length=80, max_depth=5)


def stack_evaluate(tokens: list[str]) -> int:
    """Evaluates prefix ListOps with a stack, written apart from the generator's recursion."""
    stack: list[list] = []
    for token in tokens:
        if token.startswith("["):
            stack.append([token])
        elif token == "]":
            operator, *values = stack.pop()
            values = sorted(values)
            middle = len(values) // 2
            median = (
                values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) // 2
            )
            result = {
                "[MAX": values[-1],
                "[MIN": values[0],
                "[MED": median,
                "[SM": sum(values) % 10,
            }[operator]
            if not stack:
                return result
            stack[-1].append(result)
        else:
            stack[-1].append(int(token))
    raise AssertionError("unbalanced expression")


def decode(ids) -> list[str]:
    return [listops.VOCAB[i] for i in ids]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    builder = tasks.prepare_builder(
        tasks.get_task("listops"), TINY, str(tmp_path_factory.mktemp("tfds"))
    )
    sources = tasks.load_sources(builder)
    return builder, {split: [src[i] for i in range(len(src))] for split, src in sources.items()}


def test_split_sizes_and_metadata(generated):
    builder, splits = generated
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "validation": 50, "test": 50}
    longest = max(len(e["tokens"]) for examples in splits.values() for e in examples)
    assert builder.info.metadata["max_length"] == longest


def test_labels_match_independent_evaluator(generated):
    _, splits = generated
    for examples in splits.values():
        for example in examples:
            assert stack_evaluate(decode(example["tokens"])) == example["label"]


def test_lengths_strictly_inside_range(generated):
    _, splits = generated
    lengths = [len(e["tokens"]) for examples in splits.values() for e in examples]
    assert min(lengths) > TINY["min_length"] and max(lengths) < TINY["max_length"]


def test_no_duplicates_within_or_across_splits(generated):
    _, splits = generated
    expressions = [bytes(e["tokens"]) for examples in splits.values() for e in examples]
    assert len(set(expressions)) == len(expressions)


def test_vocabulary_and_depth():
    assert len(listops.VOCAB) == 16 and listops.VOCAB[0] == "<pad>"
    rng_trees = list(listops.generate_expressions(listops.GeneratorOptions(**TINY), 100))
    depths = []
    for tokens, _ in rng_trees:
        depth = level = 0
        for token in tokens:
            level += token.startswith("[")
            level -= token == "]"
            depth = max(depth, level)
        depths.append(depth)
    assert max(depths) <= TINY["max_depth"] - 1  # operators sit above the depth-limit leaves


def test_same_seed_same_data_and_other_seed_differs():
    options = listops.GeneratorOptions(**TINY)
    first = list(listops.generate_expressions(options, 50))
    again = list(listops.generate_expressions(options, 50))
    other = list(listops.generate_expressions(listops.GeneratorOptions(**TINY, seed=1), 50))
    assert first == again
    assert first != other


def test_median_truncates_and_sum_is_modulo_10():
    assert listops.apply_operator("[MED", [1, 2]) == 1
    assert listops.apply_operator("[MED", [3, 8, 1, 9]) == 5
    assert listops.apply_operator("[SM", [9, 8, 7]) == 4


def test_release_reader_on_lra_format_fixture(tmp_path):
    builder = tasks.prepare_builder(
        tasks.get_task("listops"), {"release_dir": FIXTURE}, str(tmp_path)
    )
    sources = tasks.load_sources(builder)
    assert {k: len(v) for k, v in sources.items()} == {"train": 12, "validation": 4, "test": 4}
    with open(os.path.join(FIXTURE, "basic_val.tsv")) as file:
        rows = [line.rstrip("\n").split("\t") for line in file][1:]
    expected = sorted(
        (tuple(listops.TOKEN_ID[t] for t in src.split() if t not in "()"), int(label))
        for src, label in rows
    )
    got = sorted((tuple(e["tokens"].tolist()), int(e["label"])) for e in sources["validation"])
    assert got == expected
    for example in sources["validation"]:
        assert stack_evaluate(decode(example["tokens"])) == example["label"]


def _copy_fixture(tmp_path):
    folder = tmp_path / "release"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_release_missing_folder_and_file(tmp_path):
    with pytest.raises(UserError, match="release_dir=.*is not a folder"):
        listops.builder_config({"release_dir": str(tmp_path / "absent")})
    folder = _copy_fixture(tmp_path)
    os.remove(folder / "basic_test.tsv")
    with pytest.raises(UserError, match="basic_test.tsv is missing"):
        listops.builder_config({"release_dir": str(folder)})


def test_release_bad_header(tmp_path):
    folder = _copy_fixture(tmp_path)
    text = (folder / "basic_val.tsv").read_text().replace("Source\tTarget", "src\ttgt")
    (folder / "basic_val.tsv").write_text(text)
    with pytest.raises(UserError, match=r"basic_val.tsv:1: header must be 'Source<TAB>Target'"):
        listops.builder_config({"release_dir": str(folder)})


@pytest.mark.parametrize(
    "line, message",
    [("( [MAX 3 ) ]\t12", "label 12 is outside 0-9"), ("( [POW 3 ) ]\t1", "unknown ListOps token")],
)
def test_release_malformed_line_names_file_and_line_and_leaves_nothing(tmp_path, line, message):
    folder = _copy_fixture(tmp_path)
    with open(folder / "basic_train.tsv", "a") as file:
        file.write(line + "\n")
    data_dir = tmp_path / "tfds"
    with pytest.raises(UserError, match=rf"basic_train.tsv:14: {message}"):
        tasks.prepare_builder(
            tasks.get_task("listops"), {"release_dir": str(folder)}, str(data_dir)
        )
    leftovers = [
        os.path.join(root, name)
        for root, _, files in os.walk(data_dir)
        for name in files
        if "array_record" in name or name.endswith(".json")
    ]
    assert leftovers == []


def test_unknown_or_bad_generator_options():
    with pytest.raises(UserError, match=r"unknown field\(s\) \['depth'\]"):
        listops.builder_config({"depth": 3})
    with pytest.raises(UserError, match="min_length=50 and max_length=51"):
        listops.builder_config({"min_length": 50, "max_length": 51})
    with pytest.raises(UserError, match="num_train=-1"):
        listops.builder_config({"num_train": -1})


def test_tokens_are_uint8_ids():
    ids = listops.encode(["[SM", "3", "]"], "test")
    assert ids.dtype == np.uint8 and ids.tolist() == [14, 4, 15]


def test_generation_does_not_depend_on_the_number_of_workers():
    options = listops.GeneratorOptions(**TINY)
    serial = list(listops.generate_expressions(options, 6_000, num_workers=1))
    parallel = list(listops.generate_expressions(options, 6_000, num_workers=2))
    assert serial == parallel and len({tuple(t) for t, _ in serial}) == 6_000


def test_too_narrow_a_range_is_an_error_not_an_endless_loop():
    options = listops.GeneratorOptions(min_length=3, max_length=5, max_depth=2, max_args=2)
    with pytest.raises(UserError, match="only .* distinct expressions"):
        list(listops.generate_expressions(options, 500))
