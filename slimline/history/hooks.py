"""What `run`, `bench` (and `search`) do once their report is written: regression gate, history, MLflow.

The pipeline never imports the history (it sits above the pipeline); the API calls `after_run` with
the finished report. When the regression budget adds rows the report files are rewritten, so
report.json, report.md and report.html always hold the verdict the command exits with.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from slimline.benchmarking.report import Report, write_report
from slimline.core.errors import OutputError
from slimline.history.facts import run_row
from slimline.history.pending import write_pending_record
from slimline.history.records import record_row
from slimline.history.regression import check_regression
from slimline.profiles.schema import RegressionBudget

log = logging.getLogger(__name__)

HistoryLike = str | Path | bool | None


def history_choice(history: HistoryLike) -> tuple[bool, Path | None]:
    """(record at all, path or None for the default): False means --no-history, True/None the default."""
    if history is False:
        return False, None
    if history is True or history is None:
        return True, None
    return True, Path(history)


def _record(report: Report, kind: str, out_dir: Path, path: Path | None) -> tuple[int | None, Report]:
    """Record the finished run; when the history fails now (it passed the pre-flight), the verdict stands:
    warn, keep the record as OUT/history-record.json for `slimline history import`, and say so in the report."""
    try:
        row = run_row(report, kind, out_dir)
    except (OSError, ValueError) as err:  # the artifact's manifest vanished or was damaged since the bench
        log.warning("the run was not recorded in the history: its facts could not be read (%s)", err)
        return None, report
    try:
        return record_row(row, path), report
    except (OutputError, sqlite3.Error, OSError) as err:
        error = " ".join(str(err).split())
        try:
            kept = write_pending_record(row, out_dir, path, error)
        except OSError as write_err:
            log.warning("the run was not recorded in the history (%s), and its record could not be kept beside "
                        "the report either: %s", error, write_err)
            return None, report
        warning = (f"the run was not recorded in the history ({error}); its record is kept in {kept}: add it "
                   f"with `slimline history import {kept}` once the history works again")
        log.warning(warning)
        updated = report.model_copy(update={"warnings": [*report.warnings, warning]})
        try:
            write_report(updated, out_dir)
        except OSError as write_err:
            log.warning("report files not updated with that warning: %s", write_err)
            return None, report
        return None, updated


def after_run(report: Report, kind: str, out_dir: Path, *, history: HistoryLike = None,
              mlflow_uri: str | None = None) -> tuple[Report, int | None]:
    """Apply the profile's regression budget, record the run, log it to MLflow; returns (report, run id)."""
    enabled, path = history_choice(history)
    spec = report.profile.get("regression_vs_shipped")
    updated = report
    if spec:
        budget = RegressionBudget.model_validate(spec)
        if enabled:
            updated = check_regression(report, budget, path)
        else:
            updated = report.model_copy(update={"warnings": [
                *report.warnings, "regression_vs_shipped: not checked, the history is off (--no-history)"]})
    if updated is not report:
        write_report(updated, out_dir)
    run_id = None
    if enabled:
        run_id, updated = _record(updated, kind, out_dir, path)
    if mlflow_uri:
        from slimline.history.mlflow_sink import log_to_mlflow

        log_to_mlflow(updated, out_dir, mlflow_uri, kind=kind, history_run_id=run_id)
    return updated, run_id
