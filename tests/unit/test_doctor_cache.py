"""`slimline doctor` answers fast on a second run: its slow probes (the export stack imported in a fresh
interpreter, torch's CUDA facts) are cached per environment, keyed on what their answers depend on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from slimline.core import doctor
from slimline.core.env_cache import environment_key, per_environment


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path / "cache"))


def test_an_answer_is_computed_once_per_environment_and_again_on_refresh() -> None:
    calls: list[int] = []

    def probe() -> dict:
        calls.append(1)
        return {"ok": True}

    assert per_environment("p", probe) == ({"ok": True}, None)
    value, at = per_environment("p", probe)
    assert value == {"ok": True} and at is not None and len(calls) == 1
    assert per_environment("p", probe, refresh=True)[1] is None and len(calls) == 2


def test_an_answer_the_caller_does_not_keep_is_probed_every_time() -> None:
    calls: list[int] = []
    for _ in range(2):
        per_environment("p", lambda: calls.append(1) or {"ok": False}, keep=lambda v: v["ok"])
    assert len(calls) == 2


def test_the_key_changes_with_the_import_path_the_gpu_visibility_and_the_installed_packages(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    before = environment_key()
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    assert environment_key() != before
    monkeypatch.undo()
    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert environment_key() != before
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    site = tmp_path / "site"
    (site / "newpkg-1.0.dist-info").mkdir(parents=True)
    (site / "newpkg-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: newpkg\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    with_package = environment_key()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)] + [str(tmp_path / "empty")])
    assert environment_key() != with_package  # same path count, one distribution fewer


def test_diagnose_probes_torch_and_the_export_stack_once_and_says_when(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"torch": 0, "export": 0}
    torch_check = doctor._torch_check

    def counted_torch() -> tuple:
        calls["torch"] += 1
        return torch_check()

    def counted_export() -> doctor.Check:
        calls["export"] += 1
        return doctor.Check(name="export imports", ok=True, detail="all import groups load")

    monkeypatch.setattr(doctor, "_torch_check", counted_torch)
    monkeypatch.setattr(doctor, "_export_imports_check", counted_export)
    first = doctor.diagnose()
    second = doctor.diagnose()
    assert calls == {"torch": 1, "export": 1}
    assert not first.cached and set(second.cached) == {"torch CUDA", "export imports"}
    assert [c.model_dump() for c in first.checks] == [c.model_dump() for c in second.checks]
    doctor.diagnose(refresh=True)
    assert calls == {"torch": 2, "export": 2}


def test_a_broken_export_stack_is_never_answered_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def broken() -> doctor.Check:
        calls.append(1)
        return doctor.Check(name="export imports", ok=False, detail="torchvision breaks it", fix="pip uninstall")

    monkeypatch.setattr(doctor, "_export_imports_check", broken)
    doctor.diagnose()
    report = doctor.diagnose()
    assert len(calls) == 2 and "export imports" not in report.cached
