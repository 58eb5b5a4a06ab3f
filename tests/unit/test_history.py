"""The results history: schema migrations, concurrent writers, ship marks, regressions, compare, exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slimline.benchmarking.budgets import BudgetResult
from slimline.benchmarking.latency import summarize
from slimline.benchmarking.report import Report
from slimline.benchmarking.results_model import CandidateResult, pack_correct
from slimline.profiles.schema import Budget, RegressionBudget

MACHINE = {"cpu_model": "Test CPU 9000", "cpu_flags": ["avx2", "avx512_vnni"], "arch": "x86_64", "cpu_count": 2,
           "cuda_devices": [], "os": "Linux"}


def _result(label: str, p50_ms: float, spread_ms: float, accuracy: float | None, correct: np.ndarray | None,
            runtime: str = "onnxruntime") -> CandidateResult:
    rng = np.random.default_rng(int(p50_ms * 1000))
    samples = list(p50_ms + rng.uniform(-spread_ms, spread_ms, 200))
    return CandidateResult(label=label, runtime=runtime, format="onnx", model_dir="/nonexistent",
                           latency={"b1_s16": summarize(samples, 1)}, size_mb=10.0, peak_rss_mb=100.0, load_s=0.1,
                           accuracy_pct=accuracy, accuracy_drop_pt=None if accuracy is None else 0.0,
                           correct_b64=None if correct is None else pack_correct(correct))


def make_report(p50_ms: float = 10.0, spread_ms: float = 0.2, correct: np.ndarray | None = None,
                machine: dict | None = None, examples_sha: str = "abc", profile: str = "cpu-test") -> Report:
    if correct is None:
        correct = np.arange(400) % 10 != 0  # 90 %
    accuracy = 100.0 * float(np.mean(correct))
    final = _result("int8", p50_ms, spread_ms, accuracy, correct)
    baseline = _result("torch fp32 eager (baseline)", 3 * p50_ms, spread_ms, 90.0, np.arange(400) % 10 != 0, "torch")
    budgets = [BudgetResult(name="latency_p95_ms", kind="max", limit=100.0, measured=p50_ms, status="pass")]
    return Report(created_at="2026-01-01T00:00:00+00:00", machine=machine or MACHINE, versions={"slimline": "0.1.0"},
                  profile={"name": profile, "target": {"device": "cpu", "threads": 2}, "budgets": {}},
                  recipe=[{"pass": "quantize.ort-int8-dynamic", "with": {}}], checkpoint="/models/demo", stages=[],
                  eval_data={"examples": len(correct), "examples_sha256": examples_sha,
                             "dataset": {"source": "test.csv", "split": "test"}},
                  baseline=baseline, measurements=final, speedup_vs_baseline=3.0, accuracy_drop_pt=0.0,
                  budgets=budgets, verdict="pass")


def test_a_recorded_run_lists_with_its_figures_and_can_be_shipped(tmp_path: Path) -> None:
    from slimline.history.export import export_rows
    from slimline.history.records import get_run, list_runs, record_run, ship_run

    db = tmp_path / "h.sqlite"
    run_id = record_run(make_report(), "run", tmp_path, db)
    [record] = list_runs(db, profile="cpu-test")
    assert record.id == run_id and record.shipped_at is None and record.verdict == "pass"
    assert record.machine_description == "Test CPU 9000"
    assert ship_run(run_id, db).shipped_at is not None
    assert get_run(f"#{run_id}", db).report.measurements.label == "int8"
    rows = {(r["model_role"], r["metric"]): r for r in export_rows(db)}
    p50 = rows[("final", "latency_p50_ms")]
    assert p50["low"] < p50["value"] < p50["high"] and p50["n"] == 200
    assert rows[("final", "accuracy_pct")]["low"] < 90.0 < rows[("final", "accuracy_pct")]["high"]
    assert list_runs(db, profile="another") == []


def test_the_head_revision_constant_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from slimline.history.store import HEAD_REVISION, MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_history_at_the_first_schema_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    from slimline.history.facts import run_row
    from slimline.history.records import list_runs, ship_run
    from slimline.history.store import open_history, transaction

    db = tmp_path / "old.sqlite"
    connection = open_history(db, revision="0001")  # what the first release created
    row = run_row(make_report(), "run", tmp_path)
    del row["machine_description"]  # not a column before 0002
    with transaction(connection):
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"
        connection.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           list(row.values()))
    connection.close()
    [record] = list_runs(db)  # opening upgrades to head, backfilling the new column
    assert record.machine_description == "Test CPU 9000"
    assert ship_run(record.id, db).shipped_at is not None  # the table 0002 added
    connection = open_history(db)
    assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from unit.test_history import make_report
from slimline.history.records import record_run
report = make_report()
for _ in range({count}):
    record_run(report, "run", Path({out!r}), Path({db!r}))
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    from slimline.history.export import export_rows
    from slimline.history.records import list_runs

    db, count = tmp_path / "shared.sqlite", 15
    script = WRITER.format(tests=str(Path(__file__).parents[1]), count=count, out=str(tmp_path), db=str(db))
    writers = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read() if writer.stderr else ""
    runs = list_runs(db)
    assert len(runs) == 2 * count and len({r.id for r in runs}) == 2 * count
    per_run = len([r for r in export_rows(db) if r["run_id"] == runs[0].id])
    assert per_run > 10 and len(export_rows(db)) == per_run * 2 * count  # every run complete: one transaction


def _shipped(tmp_path: Path, report: Report) -> Path:
    from slimline.history.records import record_run, ship_run

    db = tmp_path / "h.sqlite"
    ship_run(record_run(report, "run", tmp_path, db), db)
    return db


def test_a_slowdown_beyond_limit_and_spread_is_a_regression(tmp_path: Path) -> None:
    from slimline.history.regression import check_regression

    db = _shipped(tmp_path, make_report(p50_ms=10.0))
    budget = RegressionBudget(latency_p50_pct=Budget(max=5))
    slowed = check_regression(make_report(p50_ms=12.0), budget, db)
    [row] = [b for b in slowed.budgets if b.name == "latency_p50_pct_vs_shipped"]
    assert row.status == "fail" and row.measured == pytest.approx(20, abs=3) and slowed.verdict == "fail"
    same = check_regression(make_report(p50_ms=10.0), budget, db)
    assert same.verdict == "pass"


def test_a_slowdown_over_the_limit_but_within_the_spread_is_not_a_regression(tmp_path: Path) -> None:
    from slimline.history.regression import check_regression

    db = _shipped(tmp_path, make_report(p50_ms=10.0, spread_ms=4.0))
    checked = check_regression(make_report(p50_ms=10.8, spread_ms=4.0), RegressionBudget(
        latency_p50_pct=Budget(max=5)), db)
    [row] = [b for b in checked.budgets if b.name == "latency_p50_pct_vs_shipped"]
    assert row.measured > 5 and row.status == "pass" and "within the spread" in row.note


def test_accuracy_regression_uses_the_paired_error_on_the_same_examples(tmp_path: Path) -> None:
    from slimline.history.regression import accuracy_difference, check_regression

    shipped = make_report()
    db = _shipped(tmp_path, shipped)
    worse_correct = np.arange(400) % 10 != 0
    worse_correct[np.flatnonzero(worse_correct)[:40]] = False  # 40 more examples wrong: -10 pt
    worse = make_report(correct=worse_correct)
    drop, se, how = accuracy_difference(worse, shipped)
    assert drop == pytest.approx(10.0) and "paired" in how and se > 0
    checked = check_regression(worse, RegressionBudget(accuracy_drop_pt=Budget(max=0.3)), db)
    assert [b.status for b in checked.budgets if b.name == "accuracy_drop_pt_vs_shipped"] == ["fail"]
    other_examples = make_report(correct=worse_correct, examples_sha="different")
    assert "unpaired" in accuracy_difference(other_examples, shipped)[2]


def test_a_shipped_run_on_another_machine_class_is_never_compared_silently(tmp_path: Path) -> None:
    from slimline.history.regression import check_regression

    db = _shipped(tmp_path, make_report(p50_ms=1.0, machine={**MACHINE, "cpu_flags": ["avx2"]}))
    checked = check_regression(make_report(p50_ms=50.0), RegressionBudget(latency_p50_pct=Budget(max=5)), db)
    assert checked.verdict == "pass" and len(checked.budgets) == 1
    assert any("NOT compared" in w and "another machine class" in w for w in checked.warnings)


def test_compare_gives_latency_cis_and_a_paired_accuracy_difference(tmp_path: Path) -> None:
    from slimline.history.compare import compare_runs
    from slimline.history.records import get_run, record_run

    db = tmp_path / "h.sqlite"
    a = record_run(make_report(p50_ms=10.0), "run", tmp_path, db)
    b = record_run(make_report(p50_ms=20.0), "bench", tmp_path, db)
    comparison = compare_runs(get_run(a, db), get_run(b, db))
    rows = {row[0]: row for row in comparison.rows}
    latency = rows["latency p50 ms (b1_s16)"]
    assert latency[3].startswith("+10.") and latency[4] == "yes, by within-run CIs"
    assert any("within-run only" in note and "--retime" in note for note in comparison.notes)
    assert "paired SE" in rows["accuracy % (95% Wilson)"][3]
    assert "<svg" in comparison.html() and not comparison.warnings


def test_history_exports_csv_and_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as parquet

    from slimline.history.export import COLUMNS, export_history
    from slimline.history.records import record_run

    db = tmp_path / "h.sqlite"
    record_run(make_report(), "run", tmp_path, db)
    text = export_history("csv", None, db)
    assert text.splitlines()[0] == ",".join(COLUMNS) and "latency_p50_ms" in text
    table = parquet.read_table(export_history("parquet", tmp_path / "h.parquet", db))
    assert table.num_rows == len(text.splitlines()) - 1 and table.schema.field("value").type == "double"


@pytest.mark.slow  # MLflow's own database set-up takes 6-12 s on 2 cores
def test_mlflow_sink_logs_parameters_metrics_and_report_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is in the dev extra ('slimline[mlflow]')")
    from slimline.history.mlflow_sink import log_to_mlflow

    monkeypatch.chdir(tmp_path)  # a database backend keeps artifacts in ./mlruns
    (tmp_path / "report.md").write_text("# report\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow 3 keeps its file store in maintenance mode
    run_id = log_to_mlflow(make_report(), tmp_path, uri, kind="run", history_run_id=7)
    run = mlflow.tracking.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.params["profile"] == "cpu-test" and run.data.tags["slimline.history_run"] == "7"
    assert run.data.metrics["latency_p50_ms"] == pytest.approx(10.0, abs=0.5)
    artifacts = {a.path for a in mlflow.tracking.MlflowClient(tracking_uri=uri).list_artifacts(run_id, "slimline")}
    assert {"slimline/report.json", "slimline/report.md"} <= artifacts


def test_an_unreadable_history_is_a_bad_input_error_naming_the_fix(tmp_path: Path) -> None:
    from slimline.core.errors import OutputError
    from slimline.history.records import list_runs

    bogus = tmp_path / "not-a-db.sqlite"
    bogus.write_text(json.dumps({"not": "sqlite"}) * 100)
    with pytest.raises(OutputError, match="--history"):
        list_runs(bogus)
