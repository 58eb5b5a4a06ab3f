"""The suite's own layout: pytest imports test files by basename (rootdir-relative, no packages),
so two test files with one name in different folders stop the whole collection in CI."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_has_a_unique_basename():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def test_no_test_restores_the_whole_sys_path() -> None:
    """monkeypatch.syspath_prepend restores all of sys.path at teardown, dropping the folder onnxruntime.transformers
    appends on first import: every later fusion in the session then failed ("No module named 'fusion_options'").
    Tests make a folder importable with conftest's on_sys_path instead."""
    offenders = [path.name for path in TESTS.rglob("*.py")
                 if path.name != Path(__file__).name and "syspath_prepend(" in path.read_text(encoding="utf-8")]
    assert offenders == []
