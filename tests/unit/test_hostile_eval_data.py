"""Hostile CSV/JSONL eval data is refused while streaming, in bounded memory.

A CSV with 1,000,000 columns held the pre-flight for minutes at 2.8 GB; a single 200 MB line read
1-1.8 GB. Each file here is read in a fresh interpreter that reports its own peak RSS (VmHWM), so the
bound covers everything the reader allocated, not only what tracemalloc sees; the subprocess timeout only
keeps a regression from hanging the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from slimline.core.errors import DataError
from slimline.core.text_rows import MAX_COLUMNS, MAX_FIELD_CHARS, MAX_LINE_BYTES

#: Peak RSS of the reading process: an interpreter with numpy and pydantic is ~100 MB; the files are 10-64 MB.
PEAK_RSS_LIMIT_MB = 300
READER = """
import sys
from slimline.core.data import DatasetSpec, load_dataset
from slimline.core.errors import DataError
try:
    load_dataset(DatasetSpec(source=sys.argv[1], split="all"), ["neg", "pos"])
    print("READ")
except DataError as err:
    print("REFUSED", " ".join(str(err).split()))
with open("/proc/self/status") as status:
    print("PEAK_MB", next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024)
"""


def _read_in_subprocess(path: Path) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return lines[0], float(lines[-1].split()[1])


def _one_long_csv_line(path: Path) -> None:
    with path.open("wb") as handle:
        handle.write(b"text,label\n")
        for _ in range(64):
            handle.write(b"x" * (1 << 20))  # one 64 MB field on one line
        handle.write(b",pos\n")


def _million_columns(path: Path) -> None:
    path.write_bytes(b"text,label," + b",".join(b"c%d" % i for i in range(1_000_000)) + b"\nfilm,pos\n")


def _many_short_columns(path: Path) -> None:
    path.write_bytes(b"text,label," + b",".join(b"c%d" % i for i in range(MAX_COLUMNS)) + b"\nfilm,pos\n")


def _quoted_field_over_many_lines(path: Path) -> None:
    lines = b"\n".join([b"y" * 1000] * (MAX_FIELD_CHARS // 1000 + 10))  # every line short, the field long
    path.write_bytes(b'text,label\n"' + lines + b'",pos\n')


def _one_long_jsonl_line(path: Path) -> None:
    with path.open("wb") as handle:
        handle.write(b'{"text": "')
        for _ in range(64):
            handle.write(b"x" * (1 << 20))
        handle.write(b'", "label": "pos"}\n')


def _jsonl_with_many_keys(path: Path) -> None:
    record = {"text": "film", "label": "pos", **{f"k{i}": 0 for i in range(MAX_COLUMNS)}}
    path.write_text(json.dumps(record) + "\n")


def _deeply_nested_jsonl(path: Path) -> None:
    path.write_bytes(b"[" * 1_000_000 + b"\n")


def _long_json_string(path: Path) -> None:
    path.write_text(json.dumps({"text": "z" * (MAX_FIELD_CHARS + 1), "label": "pos"}) + "\n")


HOSTILE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "a 64 MB CSV line": ("data.csv", _one_long_csv_line, f"longer than {MAX_LINE_BYTES:,} bytes"),
    "1,000,000 CSV columns": ("data.csv", _million_columns, f"longer than {MAX_LINE_BYTES:,} bytes"),
    "too many short CSV columns": ("data.csv", _many_short_columns, f"at most {MAX_COLUMNS} are read"),
    "a quoted CSV field over many lines": ("data.csv", _quoted_field_over_many_lines, "field larger than field limit"),
    "a 64 MB JSONL line": ("data.jsonl", _one_long_jsonl_line, f"longer than {MAX_LINE_BYTES:,} bytes"),
    "a JSONL record with too many keys": ("data.jsonl", _jsonl_with_many_keys, f"at most {MAX_COLUMNS} are read"),
    "a JSONL line nested a million deep": ("data.jsonl", _deeply_nested_jsonl, "not a JSON object"),
    "a JSONL text over the field limit": ("data.jsonl", _long_json_string, f"over {MAX_FIELD_CHARS:,} characters"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_eval_data_is_refused_in_bounded_memory(case: str, tmp_path: Path) -> None:
    name, make, message = HOSTILE[case]
    path = tmp_path / name
    make(path)
    outcome, peak_mb = _read_in_subprocess(path)
    assert outcome.startswith("REFUSED") and message in outcome, outcome
    assert str(path) in outcome
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB reading {path.stat().st_size >> 20} MB"


def test_a_row_with_more_fields_than_the_header_names_its_line(tmp_path: Path) -> None:
    from slimline.core.data import DatasetSpec, load_dataset

    path = tmp_path / "data.csv"
    path.write_text("text,label\nfilm,pos\nplot,neg,extra,fields\n")
    with pytest.raises(DataError, match="line 3 has 4 fields; the header has 2"):
        load_dataset(DatasetSpec(source=str(path), split="all"))


def test_quoted_commas_and_line_breaks_blank_lines_and_a_bom_read_as_pandas_read_them(tmp_path: Path) -> None:
    from slimline.core.data import DatasetSpec, load_dataset

    path = tmp_path / "data.csv"
    path.write_bytes('\ufefftext,label\r\n"good, really",pos\r\n\r\n"two\nlines",neg\r\n'.encode())
    data = load_dataset(DatasetSpec(source=str(path), split="all"), ["neg", "pos"])
    assert sorted(zip(data.texts, data.labels.tolist(), strict=True)) == [("good, really", 1), ("two\nlines", 0)]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n\n{"text": 2, "label": 0, "other": [1, 2]}\n')
    data = load_dataset(DatasetSpec(source=str(jsonl), split="all"), ["neg", "pos"])
    assert sorted(zip(data.texts, data.labels.tolist(), strict=True)) == [("2", 0), ("a", 1)]


def test_a_label_column_that_holds_no_classes_is_refused(tmp_path: Path) -> None:
    from slimline.core.data import MAX_DISTINCT_LABELS, DatasetSpec, load_dataset

    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"film,{i}\n" for i in range(MAX_DISTINCT_LABELS + 1)))
    with pytest.raises(DataError, match="distinct labels"):
        load_dataset(DatasetSpec(source=str(path), split="all"))
