"""Rows of a labelled CSV or JSON-lines file, streamed with every size bounded before it is held.

pandas read the whole header (a CSV with 1,000,000 columns held the pre-flight for minutes at 2.8 GB)
and any line whole (one 200 MB line took 1-1.8 GB). Here a line is read with a length limit and refused
as soon as it passes it, the header's column count is checked before any row is read, each field is
bounded by the csv module's own field limit (and JSON strings by the same number of characters), and
each row is dropped once its two fields are taken: memory is one line plus what the caller keeps.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from slimline.core.errors import DataError, shorten

#: One physical line: a JSONL record or a CSV row. A text example of MAX_FIELD_CHARS, escaped, fits.
MAX_LINE_BYTES = 2 << 20
#: Characters in one field: the csv module's default limit (131,072), tens of thousands of tokens, more
#: than any sequence length a profile allows.
MAX_FIELD_CHARS = 131_072
#: Columns in the header (CSV) or keys in a record (JSONL): labelled data needs two.
MAX_COLUMNS = 1024
FIX = (f"eval data is one example per row with a text and a label column (at most {MAX_COLUMNS} columns, "
       f"{MAX_FIELD_CHARS:,} characters per field, {MAX_LINE_BYTES >> 20} MiB per line); split or trim the file.")


class _BoundedLines:
    """A binary file's lines as text; a line longer than MAX_LINE_BYTES is refused after reading that much."""

    def __init__(self, handle: BinaryIO, source: str) -> None:
        self.handle, self.source, self.number = handle, source, 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise DataError(f"{self.source}: line {self.number} is longer than {MAX_LINE_BYTES:,} bytes.", fix=FIX)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{self.source} is not UTF-8 text ({err.reason} at byte {err.start} of line "
                            f"{self.number}).", fix="save the file as UTF-8.") from err
        return text.removeprefix("\ufeff") if self.number == 1 else text


def _require_columns(source: str, header: list[str], wanted: list[str]) -> list[int]:
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DataError(f"{source} has no column(s) {missing}; it has {shorten(header)}.",
                        fix="name the columns text and label (or set text_field/label_field in the dataset spec).")
    return [header.index(name) for name in wanted]


def _csv_rows(lines: _BoundedLines, source: str, wanted: list[str]) -> Iterator[tuple[str, ...]]:
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(header) > MAX_COLUMNS:
            raise DataError(f"{source} has {len(header):,} columns in its header; at most {MAX_COLUMNS} are read.",
                            fix=FIX)
        positions = _require_columns(source, header, wanted)
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(f"{source}: the row ending on line {reader.line_num} has {len(row):,} fields; the "
                                f"header has {len(header)}.", fix="quote fields that hold commas or line breaks.")
            values = tuple(row[i] for i in positions)
            if any(len(value) > MAX_FIELD_CHARS for value in values):  # when csv's limit was raised elsewhere
                raise DataError(f"{source}: a field on line {reader.line_num} is over {MAX_FIELD_CHARS:,} "
                                "characters.", fix=FIX)
            yield values
    except csv.Error as err:  # "field larger than field limit", a stray quote at end of file
        raise DataError(f"cannot read {source}: {err} (line {reader.line_num}).", fix=FIX) from err


def _json_value(value: object, source: str, line: int, name: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise DataError(f"{source}: line {line}'s {name!r} is {type(value).__name__ if value is not None else 'null'}, "
                        "not text.", fix="give every record a text and a label value.")
    text = str(value)
    if len(text) > MAX_FIELD_CHARS:
        raise DataError(f"{source}: line {line}'s {name!r} is over {MAX_FIELD_CHARS:,} characters.", fix=FIX)
    return text


def _jsonl_rows(lines: _BoundedLines, source: str, wanted: list[str]) -> Iterator[tuple[str, ...]]:
    for text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise DataError(f"cannot read {source}: line {lines.number} is not a JSON object ({str(err)[:200]}).",
                            fix="write one JSON object per line.") from err
        if not isinstance(record, dict):
            raise DataError(f"cannot read {source}: line {lines.number} is a JSON {type(record).__name__}, not an "
                            "object.",
                            fix="write one JSON object per line.")
        if len(record) > MAX_COLUMNS:
            raise DataError(f"{source}: line {lines.number} has {len(record):,} keys; at most {MAX_COLUMNS} are "
                            "read.", fix=FIX)
        _require_columns(source, list(record), wanted)
        yield tuple(_json_value(record[name], source, lines.number, name) for name in wanted)


def labelled_rows(path: Path, source: str, columns: list[str]) -> Iterator[tuple[str, ...]]:
    """The values of `columns` in each row of a .csv (header row) or .jsonl file, as text, in file order."""
    with open(path, "rb") as handle:
        lines = _BoundedLines(handle, source)
        rows = _csv_rows(lines, source, columns) if path.suffix == ".csv" else _jsonl_rows(lines, source, columns)
        yield from rows
