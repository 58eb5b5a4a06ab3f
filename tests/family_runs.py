"""Tiny checkpoints of every family (tests.model_zoo) through the installed `slimline` console script.

Each function builds the family's checkpoint once per directory, runs the command as a user would (a process
per command, unlike the coverage matrix of docs/coverage.md, which drives its cells in process through the Python
API: tests/coverage_cells.py), and returns the exit code, the console output and report.json. No assertion
lives here: the tests judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import REPO, run_cli
from model_zoo import build

#: The `cpu` profile's own recipe (cpu-int8-dynamic: optional fusion, dynamic INT8) with a short measurement.
DEFAULT_RECIPE_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu-default-recipe.yaml"
#: Families whose attention ONNX Runtime's rules fuse (the fusion stage runs); the others skip the optional step.
FUSED_FAMILIES = frozenset({"bert", "distilbert", "roberta", "xlm-roberta", "electra", "albert"})


@dataclass
class CliRun:
    exit_code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def checkpoint(family: str, root: Path) -> Path:
    """The family's tiny checkpoint under `root` (built on first use, reused after)."""
    path = root / "checkpoints" / family
    if not (path / "config.json").is_file():
        build(family, path)
    return path


def default_profile_run(family: str, root: Path, profile: Path = DEFAULT_RECIPE_PROFILE) -> CliRun:
    """`slimline run --profile <the cpu recipe, short>` on the family's checkpoint."""
    out = root / "runs" / family
    done = run_cli("run", "--checkpoint", str(checkpoint(family, root)), "--profile", str(profile), "--out", str(out),
                   "--force", "--no-history")
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return CliRun(done.returncode, done.stdout, done.stderr, report)


#: The cpu profile's recipe for a model judged by agreement with fp32 (the ONNX-only streaming model: no labels).
TENSOR_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu-tensor.yaml"


def onnx_only_run(root: Path, profile: Path = TENSOR_PROFILE) -> CliRun:
    """`slimline run --checkpoint stream.onnx` (tests.streaming_model: a recurrent state whose batch axis is not
    first, a scalar input) with its .npz eval chunks."""
    from streaming_model import write_eval_chunks, write_streaming_onnx

    graph, chunks = root / "onnx-only" / "stream.onnx", root / "onnx-only" / "chunks.npz"
    if not graph.is_file():
        write_streaming_onnx(graph)
        write_eval_chunks(chunks)
    out = root / "runs" / "onnx-only"
    done = run_cli("run", "--checkpoint", str(graph), "--profile", str(profile), "--eval-data", str(chunks), "--out",
                   str(out), "--force", "--no-history", env={"SLIMLINE_CACHE_DIR": str(root / "cache")})
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return CliRun(done.returncode, done.stdout, done.stderr, report)
