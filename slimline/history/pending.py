"""A run the history could not take: kept beside its report as OUT/history-record.json, imported later.

Recording happens after all the work, when the verdict is already decided. If the database fails then
(the disk filled, another program locked or damaged it since the pre-flight), the run's exit code must
not change: the record is written beside the report instead, with the row exactly as it would have been
inserted (the artifact's hashes are taken now, while its directory exists), and
`slimline history import OUT/history-record.json` adds it once the history works again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimline.core.artifact import atomic_write_text
from slimline.core.errors import BadInputError
from slimline.core.small_files import read_small_file
from slimline.history.records import RUN_COLUMNS, RUN_KINDS, find_recorded, record_row
from slimline.history.store import resolve_history_path

PENDING_RECORD = "history-record.json"
PENDING_KIND = "slimline-history-record"
PENDING_SCHEMA_VERSION = 1
#: A report is tens of kB (a search's, with every trial, a few MB).
MAX_PENDING_BYTES = 256 << 20


def write_pending_record(row: dict[str, Any], out_dir: Path, history: Path | None, error: str) -> Path:
    """OUT/history-record.json: the row the history refused, what it was meant for, and why it failed."""
    path = Path(out_dir) / PENDING_RECORD
    payload = {"kind": PENDING_KIND, "schema_version": PENDING_SCHEMA_VERSION,
               "history": str(resolve_history_path(history)), "error": error, "row": row}
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return path


def _read_row(path: Path) -> dict[str, Any]:
    fix = f"pass the {PENDING_RECORD} that a run wrote when it could not record itself (or its run directory)."
    raw = read_small_file(path, max_bytes=MAX_PENDING_BYTES, what="history record", fix=fix)
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path} is not JSON: {err}.", fix=fix) from err
    if not isinstance(payload, dict) or payload.get("kind") != PENDING_KIND:
        raise BadInputError(f"{path} is not a slimline history record.", fix=fix)
    if payload.get("schema_version") != PENDING_SCHEMA_VERSION:
        raise BadInputError(f"{path} has schema_version {payload.get('schema_version')!r}; this slimline reads "
                            f"{PENDING_SCHEMA_VERSION}.", fix="import it with the slimline version that wrote it.")
    row = payload.get("row")
    missing = [c for c in RUN_COLUMNS if not isinstance(row, dict) or c not in row]
    if missing or row["kind"] not in RUN_KINDS:
        raise BadInputError(f"{path} is incomplete (missing {missing[:5]} or an unknown kind).", fix=fix)
    from pydantic import ValidationError

    from slimline.benchmarking.report import Report

    try:
        Report.model_validate_json(row["report_json"])
    except (ValidationError, ValueError, TypeError) as err:
        raise BadInputError(f"{path} holds a report this slimline cannot read: {str(err)[:300]}.", fix=fix) from err
    return row


def import_pending_record(source: Path, history: Path | None = None) -> tuple[int, bool]:
    """Add the record in `source` (a history-record.json, or the run directory holding one) to the history;
    returns (run id, whether it was new). Importing the same record twice adds it once."""
    source = Path(source)
    path = source / PENDING_RECORD if source.is_dir() else source
    row = _read_row(path)
    existing = find_recorded(row, history)
    if existing is not None:
        return existing, False
    return record_row(row, history), True
