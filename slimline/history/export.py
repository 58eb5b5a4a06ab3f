"""`slimline history export`: every recorded figure as a tidy table (one row per run, model, shape, metric).

Long format on purpose: each figure keeps its own spread columns (interval, stdev/SE, n), and pandas,
spreadsheets or a warehouse pivot it however they like. CSV needs nothing; Parquet needs pyarrow
(`pip install 'slimline[parquet]'`).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from slimline.core.artifact import atomic_write_bytes, atomic_write_text
from slimline.core.deps import require
from slimline.core.errors import BadInputError
from slimline.history.store import open_history, resolve_history_path

COLUMNS = ["run_id", "created_at", "kind", "profile", "checkpoint", "checkpoint_sha256", "artifact_sha256",
           "machine_class", "machine", "verdict", "shipped", "model_role", "model_label", "shape", "metric", "value",
           "low", "high", "stdev", "n", "spread"]
FORMATS = ("csv", "parquet")
#: In a Parquet file's footer metadata: how `is_history_export` knows the file is slimline's to replace.
PARQUET_MARK = b"slimline history export"

QUERY = """
SELECT r.id, r.created_at, r.kind, r.profile_name, r.checkpoint, r.checkpoint_sha256, r.artifact_sha256,
       r.machine_class, r.machine_description, r.verdict,
       EXISTS (SELECT 1 FROM ships s WHERE s.run_id = r.id),
       m.model_role, m.model_label, m.shape, m.name, m.value, m.low, m.high, m.stdev, m.n, m.spread
FROM runs r JOIN metrics m ON m.run_id = r.id
ORDER BY r.id, m.id
"""


def is_history_export(path: Path) -> bool:
    """`path` is a file `slimline history export` wrote: CSV with our header, or Parquet with our footer mark."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(",".join(COLUMNS)) + 2)
            if head.split(b"\n", 1)[0].rstrip(b"\r") == ",".join(COLUMNS).encode():
                return True
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - (64 << 10)))
            return head.startswith(b"PAR1") and PARQUET_MARK in handle.read()
    except OSError:
        return False


def export_rows(history_path: Path | None = None) -> list[dict[str, Any]]:
    connection = open_history(resolve_history_path(history_path))
    try:
        rows = connection.execute(QUERY).fetchall()
    finally:
        connection.close()
    return [{**dict(zip(COLUMNS, row, strict=True)), "shipped": bool(row[10])} for row in rows]


def export_history(fmt: str, out: Path | None, history_path: Path | None = None) -> str | Path:
    """CSV text (when `out` is None) or the file written; Parquet always needs `out`."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown export format {fmt!r}.", fix=f"use one of {', '.join(FORMATS)}.")
    rows = export_rows(history_path)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        if out is None:
            return buffer.getvalue()
        atomic_write_text(out, buffer.getvalue())
        return out
    if out is None:
        raise BadInputError("Parquet is binary: it needs a file.", fix="pass --out FILE.parquet.")
    pyarrow = require("pyarrow", purpose="history export --format parquet")
    import pyarrow.parquet as parquet

    table = pyarrow.Table.from_pylist(rows, schema=pyarrow.schema([
        (name, pyarrow.int64() if name in ("run_id", "n") else pyarrow.bool_() if name == "shipped"
         else pyarrow.float64() if name in ("value", "low", "high", "stdev") else pyarrow.string())
        for name in COLUMNS], metadata={b"written_by": PARQUET_MARK}))
    sink = pyarrow.BufferOutputStream()
    parquet.write_table(table, sink)
    atomic_write_bytes(out, sink.getvalue().to_pybytes())
    return out
