"""The coverage matrix (issue 20): every kind of model through every path, held to its committed expectation.

17 kinds (tests/coverage_kinds.py) x 6 columns (tests/coverage_cells.py): each cell is ✅, a refusal (exit 2) whose
fix the test follows and which then works, or n/a with slimline saying why; tests/fixtures/coverage-expected.yaml
says which, and any difference fails with what to do about it. The full matrix (about 5 minutes on two cores)
regenerates docs/coverage.md and fails when the committed file differs (printing the diff and how to refresh
it); it is slow-marked, and CI runs it in its `pytest --slow -m slow` step. Four kinds that between them reach
every kind of cell (a refusal followed, n/a cells of a plain module and of an ONNX file, an LLM's three
refusals and a package of the run its fix made) run in the default suite, and their rows must be the
committed file's.

Cells run in this process through the Python API (the CLI is a thin layer over it; the exit code is the error's
own), which saves a Python start-up per command.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from coverage_kinds import KINDS
from coverage_matrix import (
    DOC_FILE,
    REFRESH,
    SLICE,
    differences,
    load_expected,
    render,
    run_kind,
    table_rows,
    timings,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coverage")


@pytest.fixture
def in_root(root: Path, monkeypatch: pytest.MonkeyPatch, on_sys_path: Callable[[Path], None]) -> Path:
    """Plain modules import from the working directory, as a user's do; the cache is the test's own."""
    monkeypatch.chdir(root)
    on_sys_path(root)
    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(root / "cache"))
    return root


@pytest.mark.parametrize("kind", SLICE)
def test_a_representative_slice_of_the_coverage_matrix_holds(kind: str, in_root: Path) -> None:
    expected = load_expected()
    measured, seconds = run_kind(kind, in_root, expected[kind])
    print(f"{kind}: {seconds:.1f} s ({timings(measured)})")
    found = differences(kind, measured, expected[kind])
    assert not found, "\n".join(found)
    committed = DOC_FILE.read_text().splitlines()
    stale = [line for line in table_rows(kind, measured, expected[kind], in_root) if line not in committed]
    assert not stale, f"{DOC_FILE} does not say what was measured; refresh it ({REFRESH}):\n" + "\n".join(stale)


@pytest.mark.slow
def test_every_kind_through_every_path_and_docs_coverage_md_says_so(in_root: Path) -> None:
    expected = load_expected()
    assert [kind.key for kind in KINDS] == list(expected), "the expectation must list every kind, in order"
    started = time.perf_counter()
    measured, found = {}, []
    for kind in KINDS:
        measured[kind.key], seconds = run_kind(kind.key, in_root, expected[kind.key])
        print(f"{kind.key}: {seconds:.1f} s ({timings(measured[kind.key])})")
        found += differences(kind.key, measured[kind.key], expected[kind.key])
    print(f"coverage matrix: {len(KINDS)} kinds in {time.perf_counter() - started:.0f} s")
    text = render(measured, expected, in_root)
    if os.environ.get("SLIMLINE_UPDATE_COVERAGE") == "1":
        DOC_FILE.write_text(text, encoding="utf-8")
    committed = DOC_FILE.read_text(encoding="utf-8") if DOC_FILE.is_file() else ""
    diff = "".join(difflib.unified_diff(committed.splitlines(True), text.splitlines(True), str(DOC_FILE), "measured"))
    assert not found, "cells differ from tests/fixtures/coverage-expected.yaml:\n" + "\n".join(found)
    assert not diff, f"{DOC_FILE} is not what the matrix measured; refresh it with {REFRESH}\n{diff}"
