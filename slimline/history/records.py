"""Writing and reading the history: record a run, list, show, ship, and find the last shipped run.

Each record is one transaction (BEGIN IMMEDIATE, see store.py): a run, its figures and its budgets
appear together or not at all. Plain SQL on the standard library's sqlite3: the schema is small and
fixed by the migrations, and SQLAlchemy's import would cost every run half a second.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slimline.benchmarking.report import Report
from slimline.core.errors import BadInputError
from slimline.history.facts import report_metrics, run_row
from slimline.history.store import open_history, resolve_history_path, transaction

log = logging.getLogger(__name__)

RUN_KINDS = ("run", "bench", "search")


RUN_COLUMNS = ("created_at", "kind", "out_dir", "checkpoint", "checkpoint_sha256", "artifact_sha256",
               "artifact_format", "profile_name", "profile_json", "recipe_json", "machine_class", "machine_json",
               "machine_description", "versions_json", "verdict", "eval_examples_sha256", "report_json")
METRIC_COLUMNS = ("run_id", "model_role", "model_label", "shape", "name", "value", "low", "high", "stdev", "n",
                  "spread")
BUDGET_COLUMNS = ("run_id", "name", "kind", "limit_value", "measured", "status", "spread", "note")
#: RunRecord's fields in order, the last shipment of each run joined in.
SELECT_RUNS = """
SELECT r.id, r.created_at, r.kind, r.out_dir, r.checkpoint, r.checkpoint_sha256, r.artifact_sha256, r.profile_name,
       r.machine_class, r.machine_description, r.verdict, r.eval_examples_sha256,
       (SELECT MAX(s.shipped_at) FROM ships s WHERE s.run_id = r.id), r.report_json
FROM runs r
"""


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@contextlib.contextmanager
def _history(history_path: Path | None) -> Iterator[sqlite3.Connection]:
    connection = open_history(resolve_history_path(history_path))
    try:
        yield connection
    finally:
        connection.close()


@dataclass(frozen=True)
class RunRecord:
    """One run as the history holds it (`report` is the full Report, parsed on demand)."""

    id: int
    created_at: str
    kind: str
    out_dir: str
    checkpoint: str
    checkpoint_sha256: str | None
    artifact_sha256: str | None
    profile_name: str
    machine_class: str
    machine_description: str | None
    verdict: str
    eval_examples_sha256: str | None
    shipped_at: str | None
    report_json: str

    @property
    def report(self) -> Report:
        return Report.model_validate_json(self.report_json)


def record_run(report: Report, kind: str, out_dir: Path, history_path: Path | None = None) -> int:
    """Append `report` to the history (default location when `history_path` is None); returns the run id."""
    if kind not in RUN_KINDS:
        raise ValueError(f"kind must be one of {RUN_KINDS}, not {kind!r}")
    return record_row(run_row(report, kind, out_dir), history_path)


def record_row(row: dict[str, Any], history_path: Path | None = None) -> int:
    """Insert a run's row (facts.run_row) with its figures and budgets, taken from the row's report, in one
    transaction; returns the run id."""
    started = time.perf_counter()
    report = Report.model_validate_json(row["report_json"])
    with _history(history_path) as connection, transaction(connection):
        run_id = int(connection.execute(_insert("runs", RUN_COLUMNS), [row[c] for c in RUN_COLUMNS]).lastrowid)
        connection.executemany(_insert("metrics", METRIC_COLUMNS), [
            [run_id, *[metric.get(c) for c in METRIC_COLUMNS[1:]]] for metric in report_metrics(report)])
        connection.executemany(_insert("budgets", BUDGET_COLUMNS), [
            [run_id, b.name, b.kind, b.limit, b.measured, b.status, b.spread, b.note] for b in report.budgets])
    log.info("history: recorded run %d in %.1f ms", run_id, 1000 * (time.perf_counter() - started))
    return run_id


def find_recorded(row: dict[str, Any], history_path: Path | None = None) -> int | None:
    """The id of a run already recorded with this row's time, directory and report, if any (an import twice)."""
    with _history(history_path) as connection:
        found = connection.execute("SELECT id FROM runs WHERE created_at = ? AND out_dir = ? AND report_json = ?",
                                   [row["created_at"], row["out_dir"], row["report_json"]]).fetchone()
    return int(found[0]) if found else None


def list_runs(history_path: Path | None = None, *, checkpoint: str | None = None, profile: str | None = None,
              limit: int | None = None) -> list[RunRecord]:
    """Newest first; `checkpoint` matches the path as recorded or a sha256 prefix, `profile` the name."""
    conditions, values = [], []
    if checkpoint:
        conditions.append("(r.checkpoint = ? OR r.checkpoint = ? OR r.checkpoint_sha256 LIKE ?)")
        values += [checkpoint, str(Path(checkpoint).resolve()), checkpoint.replace("%", "") + "%"]
    if profile:
        conditions.append("r.profile_name = ?")
        values.append(profile)
    query = SELECT_RUNS + (" WHERE " + " AND ".join(conditions) if conditions else "") + " ORDER BY r.id DESC"
    if limit:
        query += f" LIMIT {int(limit)}"
    with _history(history_path) as connection:
        return [RunRecord(*row) for row in connection.execute(query, values).fetchall()]


def get_run(run_id: int | str, history_path: Path | None = None) -> RunRecord:
    ident = _parse_id(run_id)
    with _history(history_path) as connection:
        row = connection.execute(SELECT_RUNS + " WHERE r.id = ?", [ident]).fetchone()
    if row is None:
        raise BadInputError(f"no run {ident} in the history {resolve_history_path(history_path)}.",
                            fix="`slimline history list` shows the run ids.")
    return RunRecord(*row)


def _parse_id(run_id: int | str) -> int:
    try:
        return int(str(run_id).lstrip("#"))
    except ValueError:
        raise BadInputError(f"{run_id!r} is not a run id.", fix="pass the number `slimline history list` shows.") \
            from None


def ship_run(run_id: int | str, history_path: Path | None = None, note: str = "") -> RunRecord:
    """Mark a run as the shipped artifact: later runs with a regression budget compare with it."""
    record = get_run(run_id, history_path)
    with _history(history_path) as connection, transaction(connection):
        connection.execute("INSERT INTO ships (run_id, shipped_at, note) VALUES (?, ?, ?)",
                           [record.id, datetime.now(timezone.utc).isoformat(timespec="microseconds"), note])
    return get_run(record.id, history_path)


def last_shipped(profile: str, history_path: Path | None = None) -> list[RunRecord]:
    """The shipped runs of `profile`, most recently shipped first (every machine class)."""
    query = (SELECT_RUNS + " JOIN (SELECT run_id, MAX(id) AS last FROM ships GROUP BY run_id) s ON s.run_id = r.id"
             " WHERE r.profile_name = ? ORDER BY s.last DESC")
    with _history(history_path) as connection:
        return [RunRecord(*row) for row in connection.execute(query, [profile]).fetchall()]
