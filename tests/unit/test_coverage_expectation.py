"""The coverage matrix's judge (tests/coverage_matrix.py), without models: its expectation file is complete and
consistent, and every way a cell can change from it is reported with what to do, so the matrix test can fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from coverage_cells import COLUMNS, FOLLOWS, Outcome
from coverage_kinds import KINDS
from coverage_matrix import Expected, differences, load_expected, table_rows

REFUSED = Expected("refused", "cannot prune heads", "set heads_ratio: 0", "ffn-and-layers", "FFN + layers")
NA = Expected("na", "already an ONNX model", short="nothing to export", exit=2)


def _row(column: str, outcome: Outcome, want: Expected) -> tuple[dict[str, Outcome], dict[str, Expected]]:
    measured = {c: Outcome("ok") for c in COLUMNS}
    expected = {c: Expected() for c in COLUMNS}
    measured[column], expected[column] = outcome, want
    return measured, expected


def _refusal(message: str = "error: prune.structured: cannot prune heads of x\n    fix: set heads_ratio: 0 and ...",
             followed: Outcome | None = None) -> Outcome:
    return Outcome("refused", 2, message, "each step's fix line above", followed=followed)


def test_the_expectation_lists_every_kind_in_order_with_known_follows() -> None:
    expected = load_expected()
    assert list(expected) == [kind.key for kind in KINDS]
    follows = {cell.follow for cells in expected.values() for cell in cells.values() if cell.kind == "refused"}
    assert follows <= set(FOLLOWS) and follows  # refusals exist, and each names a fix the test can follow


@pytest.mark.parametrize(("outcome", "want", "said"), [
    (Outcome("failed", 3, "unexpected error: IndexError: index out of range"), Expected(),
     "regressed: expected ✅, got exit 3: unexpected error: IndexError"),
    (Outcome("ok"), REFUSED, "newly passes (expected refused: 'cannot prune heads'): remove the cell from"),
    (Outcome("ok"), NA, "newly passes (expected na"),
    (Outcome("refused", 2, "error: distill.kd: not text-generation models"), REFUSED, "the refusal changed"),
    (Outcome("failed", 3, "x is already an ONNX model"), NA, "the n/a changed: expected exit 2"),
    (_refusal(followed=Outcome("failed", 3, "boom")), REFUSED, "the refusal's fix, followed (`prune.structured"),
    (_refusal(), REFUSED, "does not work: not followed"),
])
def test_every_change_from_the_expectation_is_reported(outcome: Outcome, want: Expected, said: str) -> None:
    measured, expected = _row("prune-distill", outcome, want)
    found = differences("deberta-v2", measured, expected)
    assert len(found) == 1 and said in found[0], found


def test_a_refusal_whose_fix_works_and_an_na_that_says_why_are_as_expected(tmp_path: Path) -> None:
    measured, expected = _row("prune-distill", _refusal(followed=Outcome("ok")), REFUSED)
    assert differences("deberta-v2", measured, expected) == []
    row, note = table_rows("deberta-v2", measured, expected, tmp_path)
    assert "| refused → FFN + layers ✅[^deberta-v2-prune-distill] |" in row
    assert note.startswith("[^deberta-v2-prune-distill]: **DeBERTa-v2, prune + distill**: refused (exit 2): "
                           "prune.structured: cannot prune heads of x. Fix: set heads_ratio: 0 and ... Followed: ")
    message = f"{tmp_path}/models/onnx-only/stream.onnx is already an ONNX model: there is nothing to export."
    measured, expected = _row("export", Outcome("refused", 2, message, "give it as it is"), NA)
    assert differences("onnx-only", measured, expected) == []
    row, note = table_rows("onnx-only", measured, expected, tmp_path)
    assert "| n/a[^onnx-only-export] |" in row and str(tmp_path) not in note  # no machine-specific path
    assert "models/onnx-only/stream.onnx is already an ONNX model" in note
