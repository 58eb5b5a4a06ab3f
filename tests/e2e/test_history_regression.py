"""report.html in a real browser, and the regression gate end to end with the console script.

A run of the tiny BERT is recorded and shipped; a deliberately slower model (eight times wider,
same profile, same data) then exits 1 on the profile's regression_vs_shipped budget, and
`slimline compare` / `history` / `export` read both runs back. Both reports are opened in headless
Chromium (Debian's `chromium`, installed by .ci/run) with screenshots kept under test-artifacts/.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_tiny_bert, run_cli

CHROMIUM = os.environ.get("SLIMLINE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"


def _wide_bert(path: Path) -> Path:
    """The same task and tokenizer as the tiny BERT, 8x wider: slower on purpose."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    make_tiny_bert(path)
    config = BertConfig.from_pretrained(path)
    config.hidden_size, config.intermediate_size, config.num_attention_heads = 256, 1024, 4
    torch.manual_seed(1)
    BertForSequenceClassification(config).eval().save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def gated(tiny_bert: Path, labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("regression")
    profile = yaml.safe_load((REPO / "tests" / "fixtures" / "fast-cpu.yaml").read_text())
    profile["regression_vs_shipped"] = {"latency_p50_pct": {"max": 5}, "accuracy_drop_pt": {"max": 0.3}}
    profile["measurement"].update(min_iters=30)
    profile_path = root / "gated.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    history = root / "history.sqlite"
    common = ["--profile", str(profile_path), "--eval-data", str(labelled_csv), "--history", str(history)]
    first = run_cli("run", "--checkpoint", str(tiny_bert), "--out", str(root / "shipped"), *common)
    assert first.returncode == 0, first.stdout + first.stderr
    shipped = run_cli("history", "ship", "1", "--history", str(history))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    slow = run_cli("run", "--checkpoint", str(_wide_bert(root / "wide")), "--out", str(root / "slowed"), *common)
    return {"root": root, "history": history, "first": first, "slow": slow}


def test_the_first_run_says_there_is_nothing_shipped_to_compare_with(gated: dict) -> None:
    report = json.loads((gated["root"] / "shipped" / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert any("nothing of profile fast-cpu has been shipped" in w for w in report["warnings"])
    for name in ("report.html", "report-tradeoff.svg", "report.md"):
        assert (gated["root"] / "shipped" / name).is_file()
    assert "report-tradeoff.svg" in (gated["root"] / "shipped" / "report.md").read_text()


def test_a_deliberately_slower_model_fails_the_regression_budget_with_exit_1(gated: dict) -> None:
    slow = gated["slow"]
    assert slow.returncode == 1, slow.stdout + slow.stderr
    report = json.loads((gated["root"] / "slowed" / "report.json").read_text())
    rows = {b["name"]: b for b in report["budgets"]}
    assert rows["latency_p50_pct_vs_shipped"]["status"] == "fail"
    assert rows["latency_p50_pct_vs_shipped"]["measured"] > 5
    assert "shipped run #1" in rows["latency_p50_pct_vs_shipped"]["note"]
    assert rows["accuracy_drop_pt_vs_shipped"]["status"] in ("pass", "fail")  # measured, paired on the same data
    assert report["verdict"] == "fail" and "latency_p50_pct_vs_shipped" in slow.stdout
    assert "latency_p50_pct_vs_shipped" in (gated["root"] / "slowed" / "report.html").read_text()


def test_history_lists_shows_compares_and_exports_both_runs(gated: dict) -> None:
    history = str(gated["history"])
    listed = run_cli("history", "list", "--profile", "fast-cpu", "--history", history)
    assert listed.returncode == 0 and "PASS" in listed.stdout and "FAIL" in listed.stdout
    shown = run_cli("history", "show", "2", "--history", history)
    assert shown.returncode == 0 and "verdict: FAIL" in shown.stdout
    html = gated["root"] / "compare.html"
    compared = run_cli("compare", "1", "2", "--html", str(html), "--history", history)
    assert compared.returncode == 0, compared.stderr
    assert "latency p50 ms" in compared.stdout and "paired SE" in compared.stdout and html.is_file()
    exported = run_cli("history", "export", "--format", "csv", "--history", history)
    assert exported.returncode == 0
    assert {line.split(",")[0] for line in exported.stdout.splitlines()[1:]} == {"1", "2"}
    missing = run_cli("history", "show", "99", "--history", history)
    assert missing.returncode == 2 and "history list" in missing.stderr


def _browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (.ci/run does) or set "
                    "SLIMLINE_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    return sync_api.sync_playwright()


def check_in_browser(page_path: Path, screenshot: Path, expect_verdict: str, readme_copy: Path | None = None) -> None:
    report = json.loads((page_path.parent / "report.json").read_text())
    with _browser() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for width, height, suffix in ((1100, 900, ""), (390, 844, "-phone")):
                page = browser.new_page(viewport={"width": width, "height": height})
                errors: list[str] = []
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(page_path.as_uri())
                page.wait_for_load_state("load")
                verdict = page.locator("#verdict")
                assert verdict.is_visible() and expect_verdict in verdict.inner_text()
                rows = page.locator("#budgets tbody tr")
                assert rows.count() == len(report["budgets"])
                for index, budget in enumerate(report["budgets"]):
                    row = rows.nth(index)
                    row.scroll_into_view_if_needed()
                    assert row.is_visible() and budget["name"] in row.inner_text()
                plots = page.locator("svg.plot")
                assert plots.count() >= 3
                for index in range(plots.count()):
                    box = plots.nth(index).bounding_box()
                    assert box and box["width"] > 200 and box["height"] > 50
                    assert plots.nth(index).locator(".pt").count() >= 1  # marks drawn, not an empty frame
                page.locator("#tradeoff .pt :is(circle, polygon)").first.click()  # tap-to-read, no hover needed
                assert page.locator("#tradeoff .tip").inner_text().strip()
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(screenshot.with_name(screenshot.stem + suffix + ".png")), full_page=True)
                if readme_copy is not None and not suffix:  # the top of the page: verdict and the first plots
                    page.screenshot(path=str(readme_copy), clip={"x": 0, "y": 0, "width": width, "height": 1450},
                                    full_page=True)
                assert errors == [], f"console errors in {page_path}: {errors}"
                page.close()
        finally:
            browser.close()


def test_the_html_report_renders_in_chromium_without_console_errors(gated: dict) -> None:
    check_in_browser(gated["root"] / "shipped" / "report.html", ARTIFACTS / "report-pass.png", "PASS")
    readme = REPO / "docs" / "report-screenshot.png" if os.environ.get("SLIMLINE_UPDATE_SCREENSHOT") else None
    check_in_browser(gated["root"] / "slowed" / "report.html", ARTIFACTS / "report-regression.png", "FAIL", readme)


def test_chromium_is_installed_where_ci_runs() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("only CI must have Chromium (.ci/run installs it)")
    assert Path(CHROMIUM).is_file(), subprocess.run(["bash", "-c", "apt-cache policy chromium"], capture_output=True,
                                                    text=True).stdout
