"""report.json version 2 (timing budgets judged side by side) still reads version 1 reports, as history stores them."""

from __future__ import annotations

import json
from pathlib import Path

from test_history import make_report

from slimline.benchmarking.report import REPORT_SCHEMA_VERSION, Report, render_markdown


def version_1(report: Report) -> dict:
    """What a version 1 report looked like: no alone speed-ups, no budget intervals, a round-robin side_by_side."""
    data = json.loads(report.model_dump_json())
    data["schema_version"] = 1
    for key in ("command_line", "run_config"):
        data.pop(key)
    for result in (data["baseline"], data["measurements"]):
        for key in ("speedup_vs_baseline_alone", "decode_speedup_vs_baseline_alone", "side_by_side",
                    "side_by_side_latency"):
            result.pop(key)
        for stats in result["latency"].values():
            for key in ("percentile_ci95_ms", "throughput_ci95_sps", "rounds"):
                stats.pop(key)
    data["measurements"]["speedup_vs_baseline"] = 3.0
    for budget in data["budgets"]:
        for key in ("interval", "measurement", "samples"):
            budget.pop(key)
    data["side_by_side"] = {"rounds": 50, "seconds": 5.0, "latency": {}, "speedup_vs_baseline": {"int8": 2.9}}
    return data


def test_a_version_1_report_loads_with_its_speedups_labelled_as_timed_alone() -> None:
    old = Report.model_validate(version_1(make_report()))
    assert REPORT_SCHEMA_VERSION == 2 and old.schema_version == 1
    assert old.measurements.speedup_vs_baseline_alone == 3.0 and old.measurements.side_by_side == {}
    assert old.side_by_side["measured"] and "version 1" in old.side_by_side["method"]
    markdown = render_markdown(old)
    assert "judged on each model timed alone" in markdown and "Side by side" not in markdown


def test_history_reads_a_version_1_report_it_stored(tmp_path: Path) -> None:
    from slimline.history.records import get_run, record_run

    db = tmp_path / "h.sqlite"
    run_id = record_run(Report.model_validate(version_1(make_report())), "run", tmp_path, db)
    assert get_run(run_id, db).report.measurements.speedup_vs_baseline_alone == 3.0
