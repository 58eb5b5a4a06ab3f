"""`slimline demo` on the real checkpoint: MiniLM-L6 fine-tuned on Rotten Tomatoes, then the cpu profile.

Slow: the first call fine-tunes the checkpoint (a few minutes on 2 cores, cached afterwards) and the
cpu profile measures for tens of seconds per model. Run with `pytest --slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

DEMO_TIMEOUT_S = 3600


def test_the_demo_runs_the_cpu_profile_on_an_accurate_checkpoint_and_measures_accuracy(tmp_path: Path) -> None:
    from slimline.core.artifact import ModelDir
    from slimline.pipeline.demo import MIN_TEST_ACCURACY, demo_checkpoint_path

    out = tmp_path / "demo"
    completed = run_cli("demo", "--out", str(out), timeout_s=DEMO_TIMEOUT_S)
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr  # within budget, or a failed budget

    checkpoint = ModelDir.open(demo_checkpoint_path())
    assert checkpoint.manifest.metadata["accuracy"]["test"] >= MIN_TEST_ACCURACY >= 0.80

    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] in ("pass", "fail", "inconclusive", "incomplete")
    assert (report["verdict"] == "pass") == (completed.returncode == 0)
    assert report["profile"]["name"] == "cpu"
    assert report["eval_data"]["examples"] > 0
    assert report["measurements"]["accuracy_pct"] is not None
    assert report["baseline"]["accuracy_pct"] >= 100 * MIN_TEST_ACCURACY - 5
    assert report["accuracy_drop_pt"] is not None
    assert report["accuracy_drop_pt"] == pytest.approx(report["measurements"]["accuracy_drop_pt"])
    statuses = {b["name"]: b["status"] for b in report["budgets"]}
    assert statuses["accuracy_drop_pt"] != "not_measured"

    bundle = out / "bundle"
    assert (bundle / "manifest.json").is_file()
    assert run_cli("verify", str(bundle)).returncode == 0
