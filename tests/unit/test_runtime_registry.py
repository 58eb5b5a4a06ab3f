"""The runtime registry: every runtime is one folder plus one line, and nothing else branches on a runtime's name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from slimline.core.runtime_names import RUNTIMES, device_problem, runtime_names
from slimline.runtimes import all_runtimes, get_runtime, runtime_for_format, runtimes_loading
from slimline.runtimes.base import Runtime

REPO = Path(__file__).resolve().parents[2]
RUNTIMES_DIR = REPO / "slimline" / "runtimes"
SCANNED = ("slimline", "compress", "export", "bench", "profiles", "benchmarks")


def _runtime_string_comparisons(path: Path) -> list[str]:
    """`X.runtime == "name"`, `runtime != "name"`, `runtime in ("a", "b")`: a comparison whose one side names a
    runtime (a name or attribute called *runtime*) and whose other side is a string literal or a tuple/list/set
    of them."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def names_runtime(node: ast.AST) -> bool:
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
        return name == "runtime" or name.endswith("_runtime")

    def literal_strings(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return bool(node.elts) and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)
        return False

    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for left, op, right in zip(sides, node.ops, sides[1:], strict=False):
            if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                continue
            if (names_runtime(left) and literal_strings(right)) or (names_runtime(right) and literal_strings(left)):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_outside_the_runtime_folders_compares_a_runtime_to_a_name() -> None:
    offenders = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if RUNTIMES_DIR in path.parents or ".venv" in path.parts:
                continue
            offenders += _runtime_string_comparisons(path)
    assert not offenders, "ask the runtime registry (slimline.runtimes.get_runtime(...).<capability>) instead:\n" + \
        "\n".join(offenders)


def test_the_scan_finds_the_comparisons_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('if target.runtime == "tensorrt" or runtime not in ("onnxruntime", "torch"):\n    pass\n'
                      'ok = target.runtime == other.runtime and "cpu" == target.device\n')
    found = _runtime_string_comparisons(sample)
    assert len(found) == 2 and "tensorrt" in found[0] and "torch" in found[1]


def test_every_runtime_folder_has_one_registry_line_and_every_line_a_folder() -> None:
    folders = {p.name for p in RUNTIMES_DIR.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(RUNTIMES)
    for name, entry in RUNTIMES.items():
        assert entry.module == f"slimline.runtimes.{name}"


@pytest.mark.parametrize("name", runtime_names())
def test_each_runtime_folder_defines_its_runtime_and_imports_nothing_heavy(name: str) -> None:
    runtime = get_runtime(name)
    assert isinstance(runtime, Runtime) and runtime.name == name
    assert runtime.loads, "a runtime loads at least one model format"
    if runtime.engine_step:
        module, _, attribute = str(runtime.engine_exporter).partition(":")
        assert attribute and importlib.util.find_spec(module) is not None
    if runtime.engine_file_name:  # deployable: Triton must know how to serve it
        assert runtime.triton_backend and runtime.engine_suffixes
        assert runtime.engine_file_name.endswith(runtime.engine_suffixes)


def test_importing_the_registry_imports_no_runtime_library() -> None:
    import subprocess
    import sys

    code = ("import sys; from slimline.runtimes import all_runtimes; all_runtimes(); "
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'nncf', 'tensorrt', 'transformers') "
            "if m in sys.modules]; print(heavy)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout + completed.stderr


def test_formats_find_the_runtime_that_runs_them() -> None:
    assert runtime_for_format("onnx").name == "onnxruntime"
    assert runtime_for_format("onnx", preferred="tensorrt").name == "onnxruntime"  # a TensorRT run's intermediates
    assert runtime_for_format("onnx", preferred="openvino").name == "openvino"
    assert runtime_for_format("openvino").name == "openvino"
    assert "torch" in runtimes_loading("hf") and runtimes_loading("tensorrt") == ["tensorrt"]


def test_devices_are_the_registry_lines_own() -> None:
    assert device_problem("tensorrt", "cpu") and device_problem("openvino", "cuda")
    assert device_problem("onnxruntime", "cuda") is None
    assert {r.name for r in all_runtimes()} == set(RUNTIMES)
