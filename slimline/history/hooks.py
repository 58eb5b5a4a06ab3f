"""What `run`, `bench` (and `search`) do once their report is written: regression gate, history, MLflow.

The pipeline never imports the history (it sits above the pipeline); the API calls `after_run` with
the finished report. When the regression budget adds rows the report files are rewritten, so
report.json, report.md and report.html always hold the verdict the command exits with.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slimline.bench.report import Report, write_report
from slimline.core.errors import OutputError
from slimline.history.records import record_run
from slimline.history.regression import check_regression
from slimline.history.store import HISTORY_ENV
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
        try:
            run_id = record_run(updated, kind, out_dir, path)
        except OutputError as err:
            if path is not None or os.environ.get(HISTORY_ENV):  # a history the user chose must work
                raise
            # The default location (e.g. a read-only home in a container) must not fail a finished run.
            log.warning("the run was not recorded in the default history: %s", err)
    if mlflow_uri:
        from slimline.history.mlflow_sink import log_to_mlflow

        log_to_mlflow(updated, out_dir, mlflow_uri, kind=kind, history_run_id=run_id)
    return updated, run_id
