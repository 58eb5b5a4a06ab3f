"""The coverage matrix: run every cell of some kinds, hold each to its expectation, render docs/coverage.md.

The expectation (tests/fixtures/coverage-expected.yaml) lists, per kind, the cells that are not ✅: a refusal
(exit 2 with a fix, whose fix the test follows and which must then work) or n/a (the path does not apply; slimline
must say so). A cell that fails, refuses differently, or newly passes is a difference the test reports; the
rendered table shows what was measured, so the committed docs/coverage.md is true exactly when the test passes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from conftest import REPO
from coverage_cells import COLUMNS, FOLLOWS, TITLES, Cells, Outcome
from coverage_kinds import BY_KEY, KINDS, prepare

EXPECTED_FILE = REPO / "tests" / "fixtures" / "coverage-expected.yaml"
DOC_FILE = REPO / "docs" / "coverage.md"
REFRESH = "SLIMLINE_UPDATE_COVERAGE=1 pytest --slow tests/e2e/test_coverage_matrix.py"
#: The kinds the default suite runs: between them every kind of cell (a refusal whose fix is followed, n/a cells of
#: a plain module and of an ONNX file, an LLM's three refusals and the package of the run its fix made).
SLICE = ("modernbert", "cnn", "onnx-only", "llama")


@dataclass(frozen=True)
class Expected:
    kind: str = "ok"  # ok | refused | na
    says: str = ""  # in the error's message
    fix: str = ""  # in the error's fix line (refused)
    follow: str = ""  # a key of coverage_cells.FOLLOWS (refused)
    short: str = ""  # the cell's text
    exit: int = 2


def load_expected(path: Path = EXPECTED_FILE) -> dict[str, dict[str, Expected]]:
    data = yaml.safe_load(path.read_text())
    table: dict[str, dict[str, Expected]] = {}
    for key, cells in data["kinds"].items():
        assert key in BY_KEY, f"{path}: unknown kind {key}"
        table[key] = {}
        for column in COLUMNS:
            spec = (cells or {}).get(column)
            if spec is None:
                table[key][column] = Expected()
            elif "refused" in spec:
                assert spec["follow"] in FOLLOWS, f"{path}: {key}/{column}: unknown follow {spec['follow']}"
                table[key][column] = Expected("refused", spec["refused"], spec["fix"], spec["follow"], spec["short"])
            else:
                table[key][column] = Expected("na", spec["says"], short=spec["na"], exit=spec["exit"])
        assert not set(cells or {}) - set(COLUMNS), f"{path}: {key}: unknown columns"
    return table


def _matches(outcome: Outcome, expected: Expected) -> bool:
    said = expected.says in outcome.message
    if expected.kind == "na":
        return outcome.status != "ok" and outcome.exit_code == expected.exit and said
    # a recipe's refusal gives each step's fix in the message, and a general one as the error's fix
    return outcome.status == "refused" and said and expected.fix in f"{outcome.message} {outcome.fix}"


def run_kind(key: str, root: Path, expected: dict[str, Expected]) -> tuple[dict[str, Outcome], float]:
    """Every cell of one kind in column order; a refusal that is the expected one has its fix followed."""
    started = time.perf_counter()
    cells = Cells(BY_KEY[key], prepare(BY_KEY[key], root), root / "work" / key)
    for column in COLUMNS:
        outcome = cells.cell(column)
        want = expected[column]
        if want.kind == "refused" and _matches(outcome, want):
            outcome.followed = cells.follow(want.follow)
    return cells.done, time.perf_counter() - started


def timings(measured: dict[str, Outcome]) -> str:
    """Seconds per cell (and its followed fix), for the test's output."""
    return ", ".join(f"{column} {o.seconds:.1f}" + (f"+{o.followed.seconds:.1f}" if o.followed else "")
                     for column, o in measured.items())


def _describe(outcome: Outcome) -> str:
    if outcome.status == "ok":
        return "✅"
    return f"exit {outcome.exit_code}: {outcome.message.splitlines()[0] if outcome.message else '?'}"


def differences(key: str, measured: dict[str, Outcome], expected: dict[str, Expected]) -> list[str]:
    """What differs from the expectation, one line per cell, each saying what to do about it."""
    found = []
    for column in COLUMNS:
        outcome, want = measured[column], expected[column]
        where = f"{key} / {column}"
        if want.kind == "ok" and outcome.status != "ok":
            found.append(f"{where}: regressed: expected ✅, got {_describe(outcome)}")
        elif want.kind != "ok" and outcome.status == "ok":
            found.append(f"{where}: newly passes (expected {want.kind}: {want.says!r}): remove the cell from "
                         f"{EXPECTED_FILE.relative_to(REPO)} and refresh the table ({REFRESH})")
        elif want.kind != "ok" and not _matches(outcome, want):
            wanted = f"exit {want.exit} saying {want.says!r}" + (f", fix {want.fix!r}" if want.fix else "")
            found.append(f"{where}: the {'refusal' if want.kind == 'refused' else 'n/a'} changed: expected "
                         f"{wanted}; got {_describe(outcome)} / fix {outcome.fix!r}")
        elif want.kind == "refused" and (outcome.followed is None or outcome.followed.status != "ok"):
            got = _describe(outcome.followed) if outcome.followed else "not followed"
            found.append(f"{where}: the refusal's fix, followed ({FOLLOWS[want.follow]}), does not work: {got}")
    return found


def _plain(text: str, root: Path) -> str:
    """One line, no machine-specific paths (the test's work directory), safe inside a markdown table or note."""
    text = text.replace(f"{root}/", "").replace(str(root), ".")
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _sentence(text: str) -> str:
    return text if not text or text.endswith(".") else f"{text}."


def _note_id(key: str, column: str) -> str:
    return f"{key}-{column}"


def _cell(key: str, column: str, outcome: Outcome, want: Expected) -> str:
    if outcome.status == "ok":
        return "✅"
    note = f"[^{_note_id(key, column)}]"
    if want.kind == "na" and _matches(outcome, want):
        return f"n/a{note}"
    if want.kind == "refused" and _matches(outcome, want):
        fixed = outcome.followed is not None and outcome.followed.status == "ok"
        return f"refused → {want.short} {'✅' if fixed else '❌'}{note}"
    return f"❌ exit {outcome.exit_code}{note}"


def _said(outcome: Outcome, says: str) -> tuple[str, str]:
    """The part of the error that is about this cell, and its fix: a recipe's refusal lists every step's problem
    (`error: ...` then `fix: ...`); the one holding `says` is kept, else the whole message and the error's fix."""
    lines = [line.strip() for line in outcome.message.splitlines()]
    for index, line in enumerate(lines):
        if says and says in line and line.startswith("error: "):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            return line.removeprefix("error: "), following.removeprefix("fix: ") if following[:5] == "fix: " else ""
    return outcome.message, outcome.fix


def _note(key: str, column: str, outcome: Outcome, want: Expected, root: Path) -> str:
    head = f"[^{_note_id(key, column)}]: **{BY_KEY[key].label}, {TITLES[column]}**"
    said, fix = (_sentence(_plain(text, root)) for text in _said(outcome, want.says))
    fix = f" Fix: {fix}" if fix else ""
    if want.kind == "na" and _matches(outcome, want):
        return f"{head}: n/a: {want.short}. slimline says so (exit {outcome.exit_code}): {said}{fix}"
    if want.kind == "refused" and _matches(outcome, want):
        followed = outcome.followed
        result = "✅" if followed is not None and followed.status == "ok" else (
            f"❌ {_plain(_describe(followed), root)}" if followed else "❌ not followed")
        return f"{head}: refused (exit 2): {said}{fix} Followed: {FOLLOWS[want.follow]} → {result}"
    return f"{head}: ❌ not as expected (exit {outcome.exit_code}): {_sentence(_plain(outcome.message, root))}{fix}"


def table_rows(key: str, measured: dict[str, Outcome], expected: dict[str, Expected], root: Path) -> list[str]:
    """The kind's row of the table and its notes (lines of docs/coverage.md)."""
    cells = [_cell(key, c, measured[c], expected[c]) for c in COLUMNS]
    notes = [_note(key, c, measured[c], expected[c], root) for c in COLUMNS if measured[c].status != "ok"]
    return [f"| {BY_KEY[key].label} | " + " | ".join(cells) + " |", *notes]


HEADER = f"""\
# Coverage: every kind of model through every path

<!-- Generated by tests/e2e/test_coverage_matrix.py from what it measured; do not edit by hand.
     Refresh: {REFRESH} -->

Tiny random-init models (seeded, built from configs in seconds) of every kind slimline takes, through each path
a user runs. CI runs this matrix (`pytest --slow -m slow`) and fails when a cell changes: a ✅ that breaks, a
refusal that changes, or a cell that newly works (its expectation, `tests/fixtures/coverage-expected.yaml`, is
then updated); a slice of it ({', '.join(BY_KEY[key].label for key in SLICE)}) runs in the default suite.

- **✅** works: the command finishes, its model loads in ONNX Runtime with finite outputs, a run's verdict is
  measured on every budget.
- **refused → …** slimline refuses before any work (exit 2) with a fix; the test did what the fix says and it
  worked (✅) or not (❌). The note gives the message and what was followed.
- **n/a** the path does not apply to this kind; slimline says so (the note gives its message), never exit 0.

Columns, as run on each kind's own data (labelled texts, an image folder, an `.npz` of inputs, a text corpus):
**export** `slimline export` (with its parity check); **default profile** `slimline run` with the `cpu` profile
(its recipe, optional fusion + dynamic INT8, and its budgets, measured briefly with limits any value meets, so a
cell is about the path, not a random model's quality); **prune + distill** `compress` with heads and FFN halved
(`prune.structured`) and `distill.kd`, then the student exported; **static INT8** `compress` with the shipped
`cpu-int8-static` recipe (`cpu-vision-int8-static` for image models) calibrated on the kind's data, on the
export; **4-bit** `compress` with `int4-weight-only` (`llm-int4` for LLMs) on the export; **package + verify**
`slimline package` of the default run (or of the run its refusal's fix made) and `slimline verify`.

| model | {" | ".join(TITLES[c] for c in COLUMNS)} |
|---|{"---|" * len(COLUMNS)}
"""


def render(measured: dict[str, dict[str, Outcome]], expected: dict[str, dict[str, Expected]], root: Path) -> str:
    rows, notes = [], []
    for kind in KINDS:
        if kind.key in measured:
            row, *kind_notes = table_rows(kind.key, measured[kind.key], expected[kind.key], root)
            rows.append(row)
            notes += kind_notes
    return HEADER + "\n".join(rows) + "\n\n## Notes\n\n" + "\n\n".join(notes) + "\n"
