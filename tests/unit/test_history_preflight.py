"""The history in the pre-flight, and a record that fails after the run: kept beside the report, imported later.

A truncated history.sqlite was found only when the finished run recorded itself, and the run's PASS
became exit 2 after all the work.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from unit.test_history import make_report

from slimline.core.errors import EXIT_BAD_INPUT, BadInputError, OutputError


def _history_with_runs(path: Path, runs: int = 30) -> Path:
    from slimline.history.records import record_run

    for _ in range(runs):
        record_run(make_report(), "run", path.parent, path)
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0  # checkpointed on close
    return path


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return _history_with_runs(tmp_path / "history.sqlite")


def _refused(path: Path, match: str) -> OutputError:
    from slimline.history.preflight import check_history_file

    with pytest.raises(OutputError, match=match) as caught:
        check_history_file(path)
    message = str(caught.value)
    assert str(path) in message and "--no-history" in message and "--history PATH" in message
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


def test_a_truncated_history_is_refused_naming_the_file_and_the_ways_around_it(history: Path) -> None:
    size = history.stat().st_size
    with open(history, "r+b") as handle:
        handle.truncate(size // 2)
    _refused(history, "is truncated")


def test_a_history_cut_inside_its_first_page_is_refused(history: Path) -> None:
    with open(history, "r+b") as handle:
        handle.truncate(1000)
    _refused(history, "truncated|not an SQLite database")


def test_a_history_with_a_damaged_page_is_refused_by_quick_check(history: Path) -> None:
    data = bytearray(history.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) >= 4 * page_size
    data[2 * page_size : 3 * page_size] = os.urandom(page_size)  # a table page full of noise, same length
    history.write_bytes(bytes(data))
    _refused(history, "is corrupt")


@pytest.mark.parametrize(("content", "match"), [
    (b'{"not": "sqlite"}' * 100, "not an SQLite database"),
    (b"SQLite format 3\x00" + b"\xff" * 84, "damaged header|truncated"),
])
def test_a_file_that_is_not_a_history_is_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(content)
    _refused(path, match)


def test_another_programs_sqlite_database_is_refused_rather_than_migrated(tmp_path: Path) -> None:
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    before = path.read_bytes()
    _refused(path, "not a slimline history")
    assert path.read_bytes() == before


def test_a_directory_where_the_history_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "h.sqlite").mkdir()
    _refused(tmp_path / "h.sqlite", "not a regular file")


def test_a_good_new_or_empty_history_passes_the_preflight_quickly(history: Path, tmp_path: Path) -> None:
    from slimline.history.preflight import check_history_choice, check_history_file

    started = time.perf_counter()
    check_history_file(history)
    assert time.perf_counter() - started < 5  # milliseconds in practice; a bound, not a benchmark
    check_history_file(tmp_path / "new" / "deeper" / "h.sqlite")  # created by the first record
    (tmp_path / "empty.sqlite").touch()
    check_history_file(tmp_path / "empty.sqlite")
    check_history_choice(False)  # --no-history: nothing is looked at
    assert not (tmp_path / "new").exists()  # the pre-flight creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot refuse it")
def test_a_chosen_history_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused(locked / "h.sqlite", "cannot be created")
    finally:
        locked.chmod(0o700)


def test_run_bench_and_search_check_the_history_before_anything_else(tmp_path: Path) -> None:
    """The API refuses before it opens the checkpoint (which does not even exist here)."""
    from slimline import api

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    for call in (lambda: api.run(tmp_path / "missing", out=tmp_path / "out", history=bad),
                 lambda: api.bench(tmp_path / "missing", out=tmp_path / "out", history=bad),
                 lambda: api.search(tmp_path / "missing", out=tmp_path / "out", history=bad)):
        with pytest.raises(OutputError, match="not an SQLite database"):
            call()
    assert not (tmp_path / "out").exists()


# --- a record that fails after the run -------------------------------------------------------------------------


def _break(path: Path) -> None:
    path.write_bytes(b"garbage" * 1000)


def test_a_history_that_breaks_after_the_preflight_keeps_the_verdict_and_the_record(tmp_path: Path) -> None:
    from slimline.benchmarking.report import write_report
    from slimline.history.hooks import after_run
    from slimline.history.pending import PENDING_RECORD
    from slimline.history.records import list_runs

    history = _history_with_runs(tmp_path / "h.sqlite", runs=1)
    out = tmp_path / "out"
    out.mkdir()
    report = make_report()
    write_report(report, out)
    _break(history)  # after the pre-flight passed: the disk filled, another program wrote over it ...
    updated, run_id = after_run(report, "run", out, history=history)
    assert run_id is None and updated.verdict == report.verdict == "pass"
    record = out / PENDING_RECORD
    assert record.is_file() and any(str(record) in w and "history import" in w for w in updated.warnings)
    assert any("history import" in w for w in json.loads((out / "report.json").read_text())["warnings"])

    history.unlink()  # the user moves the broken file away
    from slimline import api

    run_id, new = api.import_history_record(record, history=history)
    assert new
    again, new_again = api.import_history_record(out, history=history)  # the run directory works too; once only
    assert (again, new_again) == (run_id, False)
    [recorded] = list_runs(history)
    assert recorded.id == run_id and recorded.report.model_dump() == report.model_dump()
    assert recorded.out_dir == str(out.resolve())


@pytest.mark.parametrize("content", [b"", b"{}", b'{"kind": "slimline-history-record", "schema_version": 1}',
                                     b"\xff\xfe"])
def test_importing_something_that_is_not_a_record_is_refused(tmp_path: Path, content: bytes) -> None:
    from slimline import api

    path = tmp_path / "history-record.json"
    path.write_bytes(content)
    with pytest.raises(BadInputError):
        api.import_history_record(path, history=tmp_path / "h.sqlite")
    assert not (tmp_path / "h.sqlite").exists()
