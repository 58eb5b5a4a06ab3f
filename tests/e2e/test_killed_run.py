"""`kill -9` of a run during bench: the worker dies with it, and the next run sweeps the scratch it left.

The worker runs in its own session (so Ctrl-C and timeouts kill its whole group); after SIGKILL of `run`
nobody was left to kill it, and it went on timing on the cores the next run measures with, beside a
`/tmp/slimline-bench-*` directory nobody removed. The real thing here: the console script, SIGKILL, /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, slimline_script
from test_hardening import _alive, _slow_profile

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the benchmark worker")


def _workers_under(scratch: Path) -> list[int]:
    """Benchmark workers whose spec file lies in `scratch` (this test's TMPDIR): they are this run's."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"slimline.benchmarking.worker" in cmdline and str(scratch).encode() in cmdline:
            found.append(int(entry.name))
    return found


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s:.0f} s")


def test_kill_9_of_run_during_bench_takes_the_worker_along_and_the_next_run_sweeps_its_scratch(
        tiny_bert: Path, tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    profile = _slow_profile(tmp_path, 120.0)  # the worker would time for two minutes
    env = {**os.environ, "TMPDIR": str(scratch), "COLUMNS": "200"}
    process = subprocess.Popen([slimline_script(), "run", "--checkpoint", str(tiny_bert), "--profile", str(profile),
                                "--out", str(out), "--no-history"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
    workers: list[int] = []

    def worker_started() -> bool:
        workers[:] = _workers_under(scratch)
        return bool(workers) or process.poll() is not None

    _wait(worker_started, 300, "the benchmark worker did not start")
    assert workers, f"the run ended (exit {process.returncode}) before its worker started"
    left = [p for p in scratch.iterdir() if p.name.startswith("slimline-bench-")]

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    _wait(lambda: not any(_alive(pid) for pid in workers), 10, "the worker outlived its killed parent")
    assert left and all(path.is_dir() for path in left)  # nobody was left to remove it
    assert all((path / ".slimline-owner.json").is_file() for path in left)

    nothing = run_cli("run", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "out2"),
                      "--no-history", env={"TMPDIR": str(scratch)})
    assert nothing.returncode == 2  # even a run refused at the door sweeps what a dead one left
    assert not any(path.exists() for path in left)


def test_a_worker_whose_parent_is_gone_exits_even_without_the_kernels_death_signal(tmp_path: Path) -> None:
    """The fallback where prctl is unavailable: SLIMLINE_PARENT_PID names a parent that exits at once, so the
    worker (started without the death signal) is re-parented and must notice by itself."""
    code = ("import os, time; print(os.getpid(), flush=True); from slimline.core.lifeline import watch_parent; "
            "watch_parent(); time.sleep(120)")
    launcher = (f"import os, subprocess, sys; subprocess.Popen([sys.executable, '-c', {code!r}], "
                "env={**os.environ, 'SLIMLINE_PARENT_PID': str(os.getpid())}, stdout=open(sys.argv[1], 'w'))")
    marker = tmp_path / "child.pid"
    subprocess.run([sys.executable, "-c", launcher, str(marker)], check=True, capture_output=True, timeout=60)
    _wait(lambda: marker.is_file() and marker.read_text().strip().isdigit(), 60, "the child did not start")
    child = int(marker.read_text())
    _wait(lambda: not _alive(child), 15, "the orphaned worker kept running")


def test_the_sweep_removes_only_slimline_directories_of_dead_owners(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.core.scratch import OWNER_FILE, owner_record, scratch_directory, sweep_dead_scratch

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    mine = owner_record()

    def make(name: str, record: dict | None) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "data").write_text("keep me")
        if record is not None:
            (path / OWNER_FILE).write_text(json.dumps(record))
        return path

    gone = make("slimline-bench-abcd1234", {**mine, "pid": dead_pid, "start_time": "1"})
    reused = make("slimline-eval-abcd1234", {**mine, "start_time": "-1"})  # our pid, another process's start
    alive = make("slimline-outputs-abcd1234", mine)
    unrecorded = make("slimline-bench-zzzz9999", None)
    users = make("slimline-bench-my-notes", {**mine, "pid": dead_pid})  # not tempfile's name pattern
    elsewhere = make("slimline-bench-host0001", {**mine, "pid": dead_pid, "host": "another-container"})
    unrelated = make("bench-abcd1234", {**mine, "pid": dead_pid})
    removed = sweep_dead_scratch()
    assert sorted(removed) == sorted([gone, reused])
    for kept in (alive, unrecorded, users, elsewhere, unrelated):
        assert (kept / "data").read_text() == "keep me"
    with scratch_directory("slimline-bench-") as fresh:
        assert json.loads((fresh / OWNER_FILE).read_text())["pid"] == os.getpid()
    assert not fresh.exists()
