"""The read-only commands: `profiles list|show|validate` and `passes list`."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import REPO, run_cli

from slimline.profiles.schema import list_profiles

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"


def test_profiles_list_names_every_shipped_profile_with_its_description() -> None:
    completed = run_cli("profiles", "list")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    for name in list_profiles():
        assert any(line.split()[0] == name for line in lines if line.strip()), name
    assert "interactive latency" in completed.stdout


def test_profiles_show_prints_the_profile_yaml() -> None:
    completed = run_cli("profiles", "show", "cpu")
    assert completed.returncode == 0, completed.stderr
    shown = yaml.safe_load(completed.stdout)
    assert shown["name"] == "cpu"
    assert "latency_p95_ms" in shown["budgets"]


def test_profiles_validate_accepts_a_valid_file_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    valid = run_cli("profiles", "validate", str(FAST_PROFILE))
    assert valid.returncode == 0, valid.stderr
    assert "valid profile 'fast-cpu'" in valid.stdout
    data = yaml.safe_load(FAST_PROFILE.read_text())
    data["budgets"]["size_mb"] = {"max": 10, "min": 1}
    invalid_path = tmp_path / "invalid.yaml"
    invalid_path.write_text(yaml.safe_dump(data))
    invalid = run_cli("profiles", "validate", str(invalid_path))
    assert invalid.returncode == 2
    assert "budgets.size_mb" in invalid.stderr and "exactly one of max / min / max_drop" in invalid.stderr


def test_passes_list_shows_the_int8_dynamic_pass_with_its_options() -> None:
    completed = run_cli("passes", "list")
    assert completed.returncode == 0, completed.stderr
    assert "quantize.ort-int8-dynamic (onnx-level, onnx -> onnx)" in completed.stdout
    assert "per_channel=" in completed.stdout and "options:" in completed.stdout
