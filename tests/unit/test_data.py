"""Labelled datasets: a fixed seeded split, and a DataError for anything that cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from slimline.core.data import DatasetSpec, load_dataset, split_indices
from slimline.core.errors import EXIT_BAD_INPUT, DataError

SPLITS = ("train", "validation", "test")
counts = st.integers(min_value=0, max_value=3000)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _csv(tmp_path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header, *(f"{text},{label}" for text, label in rows)]) + "\n")
    return path


@given(count=counts, seed=seeds)
def test_the_splits_are_disjoint_and_cover_every_row(count: int, seed: int) -> None:
    parts = {split: split_indices(count, split, seed) for split in SPLITS}
    together = np.concatenate(list(parts.values()))
    assert len(together) == len(set(together.tolist())) == count
    assert sorted(together.tolist()) == list(range(count))
    assert split_indices(count, "all", seed).tolist() == list(range(count))


@given(count=counts, seed=seeds)
def test_a_split_is_the_same_for_the_same_seed(count: int, seed: int) -> None:
    for split in SPLITS:
        assert np.array_equal(split_indices(count, split, seed), split_indices(count, split, seed))


@given(count=st.integers(min_value=10, max_value=3000), seed=seeds)
def test_the_split_sizes_follow_80_10_10(count: int, seed: int) -> None:
    sizes = {split: len(split_indices(count, split, seed)) for split in SPLITS}
    assert abs(sizes["train"] - 0.8 * count) <= 1
    assert abs(sizes["validation"] - 0.1 * count) <= 1
    assert all(np.all(np.diff(split_indices(count, s, seed)) > 0) for s in SPLITS), "indices come back sorted"


def test_different_seeds_give_different_splits() -> None:
    assert not np.array_equal(split_indices(1000, "test", 0), split_indices(1000, "test", 1))


def test_a_csv_loads_with_labels_mapped_to_the_given_names(tmp_path: Path) -> None:
    rows = [(f"text number {i}", "pos" if i % 3 else "neg") for i in range(40)]
    spec = DatasetSpec(source=str(_csv(tmp_path, rows)), split="all")
    data = load_dataset(spec, ["neg", "pos"])
    assert len(data) == 40
    assert data.label_names == ["neg", "pos"]
    assert data.labels.tolist() == [1 if i % 3 else 0 for i in range(40)]
    assert load_dataset(spec, ["neg", "pos"]).sha256 == data.sha256


def test_labels_default_to_sorted_names(tmp_path: Path) -> None:
    data = load_dataset(DatasetSpec(source=str(_csv(tmp_path, [("a", "zeta"), ("b", "alpha")])), split="all"))
    assert data.label_names == ["alpha", "zeta"]
    assert data.labels.tolist() == [1, 0]


def test_max_samples_limits_the_split(tmp_path: Path) -> None:
    path = _csv(tmp_path, [(f"t{i}", "pos") for i in range(100)])
    assert len(load_dataset(DatasetSpec(source=str(path), split="train", max_samples=7))) == 7


def test_jsonl_with_custom_fields_loads(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"review": "good", "y": "pos"}\n{"review": "bad", "y": "neg"}\n')
    data = load_dataset(DatasetSpec(source=str(path), split="all", text_field="review", label_field="y"))
    assert data.texts == ["good", "bad"]


def test_labels_the_model_does_not_know_are_a_data_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, [("fine", "pos"), ("meh", "neutral"), ("awful", "neg")])
    with pytest.raises(DataError, match=r"labels \['neutral'\] the model does not know") as caught:
        load_dataset(DatasetSpec(source=str(path), split="all"), ["neg", "pos"])
    assert caught.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize("header", ["sentence,label", "text,target", "review"])
def test_missing_columns_are_a_data_error_naming_the_columns(tmp_path: Path, header: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(f"{header}\nsomething\n")
    with pytest.raises(DataError, match="has no column") as caught:
        load_dataset(DatasetSpec(source=str(path), split="all"))
    assert header.split(",")[0] in str(caught.value)


def test_an_empty_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no examples"):
        load_dataset(DatasetSpec(source=str(_csv(tmp_path, [])), split="all"))


def test_an_empty_split_is_a_data_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, [("only one row", "pos")])
    with pytest.raises(DataError, match=r"split 'test' .* is empty"):
        load_dataset(DatasetSpec(source=str(path), split="test"))


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DatasetSpec(source=str(tmp_path / "missing.csv")))


def test_an_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("this is not json\n")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(DatasetSpec(source=str(path)))


@pytest.mark.parametrize("source", ["imdb", "data.txt", "rotten_tomatoes"])
def test_a_source_that_is_neither_built_in_nor_a_file_type_we_read_is_rejected(source: str) -> None:
    with pytest.raises(ValidationError, match="source must be"):
        DatasetSpec(source=source)


def test_trimmed_batches_cut_only_all_padding_columns_and_keep_every_row() -> None:
    import numpy as np

    from slimline.core.data import trimmed_batches

    lengths = np.array([2, 3, 3, 5, 7])
    mask = (np.arange(8)[None, :] < lengths[:, None]).astype(np.int64)
    arrays = {"input_ids": mask * 7, "attention_mask": mask}
    batches = list(trimmed_batches(arrays, batch_size=2))
    assert [b["input_ids"].shape for b in batches] == [(2, 3), (2, 5), (1, 7)]
    assert sum(int(b["attention_mask"].sum()) for b in batches) == int(lengths.sum())
    subset = list(trimmed_batches(arrays, batch_size=8, rows=np.array([0, 1])))
    assert subset[0]["attention_mask"].shape == (2, 3)


def test_a_large_csv_is_streamed_holding_only_the_rows_of_the_split(tmp_path: Path) -> None:
    """A 1 GB CSV took 4.6 GB to read whole; streaming two passes keeps a chunk plus the split's rows."""
    import tracemalloc

    from slimline.core.data import DatasetSpec, load_dataset

    path = tmp_path / "big.csv"
    filler = "x" * 400
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,text,extra,label\n")
        for i in range(60_000):
            handle.write(f"{i},review {i} {filler},{filler},{'pos' if i % 2 else 'neg'}\n")
    size_mb = path.stat().st_size / 2**20
    tracemalloc.start()
    data = load_dataset(DatasetSpec(source=str(path), split="test"), ["neg", "pos"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(data) == 6_000
    assert size_mb > 45
    assert peak / 2**20 < 0.5 * size_mb, f"peak {peak / 2**20:.0f} MB reading a {size_mb:.0f} MB file"


def test_a_csv_or_jsonl_path_takes_a_split_suffix_like_every_other_eval_data(tmp_path: Path) -> None:
    """`--eval-data reviews.csv:test` was refused as "not a folder, an .npz, a .csv/.jsonl" (issue 22)."""
    from slimline.benchmarking.evaluators.base import parse_eval_arg
    from slimline.core.data import parse_dataset_arg

    path = _csv(tmp_path, [(f"t{i}", "pos") for i in range(20)])
    for parse in (parse_dataset_arg, parse_eval_arg):
        spec = parse(f"{path}:validation")
        assert isinstance(spec, DatasetSpec) and spec.source == str(path) and spec.split == "validation"
        assert parse(str(path)).split == "test"
    assert parse_eval_arg("data/v1.jsonl:train").split == "train"
    with pytest.raises(DataError, match="invalid"):
        parse_dataset_arg(f"{path}:bogus")
