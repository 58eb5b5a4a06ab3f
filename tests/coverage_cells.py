"""The columns of the coverage matrix (docs/coverage.md) and the fixes its refusals name, as the Python API runs them.

A cell runs what a user runs for that column, through `slimline.export / run / compress / package / verify` in this
process (the console script would add only its start-up: the CLI is a thin layer over these functions, and the
exit code is the error's own `exit_code`). Every cell reuses what its kind already made: one export per model
for the ONNX-level columns, the default run for the bundle. A cell's outcome is `ok`, `refused` (exit 2, before
any work, with a fix) or `failed` (exit 3, or an unexpected exception: what the CLI reports as exit 3).

Profiles are the shipped ones with the test's measurement: 5 timed iterations, sequence length 16, 1 thread, and
each budget's limit moved where any measured value meets it (the budgets' names stay, so a budget the model
cannot measure is still refused, and one that is not measured leaves the verdict incomplete): a cell checks that
the path reaches a measured verdict, not how good a random model is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coverage_kinds import Kind, Source

import slimline
from slimline.api import as_profile, as_recipe
from slimline.core.errors import SlimlineError
from slimline.core.frontend import cli_calls
from slimline.profiles.schema import Profile

COLUMNS = ("export", "default-run", "prune-distill", "static-int8", "4-bit", "package-verify")
TITLES = {"export": "export", "default-run": "default profile (`cpu`)", "prune-distill": "prune + distill",
          "static-int8": "static INT8", "4-bit": "4-bit", "package-verify": "package + verify"}
FAST_MEASUREMENT = {"warmup_iters": 1, "min_iters": 5, "min_time_s": 0.0, "max_time_s": 5.0, "decode_tokens": 6,
                    "eval_max_samples": 6}
PREFLIGHT = {"iters": 5, "refuse_if_slower": False}  # timed, recorded; a busy CI core must not decide a cell
DISTILL = {"max_steps": 4, "batch_size": 8}


@dataclass
class Outcome:
    status: str  # ok | refused | failed
    exit_code: int = 0
    message: str = ""  # the error without its fix line
    fix: str = ""
    artifact: Path | None = None  # what later cells reuse: an export, a run directory
    followed: Outcome | None = None  # a refusal's fix, done as it says
    seconds: float = 0.0


def attempt(action: Callable[[], Path | None]) -> Outcome:
    """Run one cell's commands; an error becomes the outcome the CLI would print and exit with (its messages name
    flags, as the CLI's do: cli_calls)."""
    started = time.perf_counter()
    try:
        with cli_calls():
            outcome = Outcome("ok", artifact=action())
    except SlimlineError as err:
        message = str(err).split("\n  fix: ")[0]
        outcome = Outcome("refused" if err.exit_code == 2 else "failed", err.exit_code, message, err.fix or "")
    except Exception as err:  # what `slimline` reports as "unexpected error" with exit 3
        outcome = Outcome("failed", 3, f"unexpected error: {type(err).__name__}: {err}")
    outcome.seconds = time.perf_counter() - started
    return outcome


def fast_profile(name: str) -> Profile:
    """The shipped profile `name` with the test's measurement, shape and limits (module doc)."""
    data = as_profile(name).model_dump(mode="json", exclude_none=True)
    budgets = {metric: {"max": 1e9} if "max" in budget or "max_drop" in budget else {"min": 0.0}
               for metric, budget in data["budgets"].items()}
    target = {**data["target"], "threads": 1}
    return Profile.model_validate({**data, "name": f"{name}-coverage", "target": target, "budgets": budgets,
                                            "shapes": [{"batch_size": 1, "sequence_length": 16}],
                                            "measurement": FAST_MEASUREMENT})


def check_onnx_runs(model_dir: Path) -> Path:
    """The model in `model_dir` loads in ONNX Runtime and gives finite outputs on inputs made from its manifest."""
    import numpy as np
    import onnxruntime as ort

    from slimline.core.artifact import ModelDir
    from slimline.formats.inputs import synthetic_feeds
    from slimline.profiles.schema import Shape

    model = ModelDir.open(model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    feeds = synthetic_feeds(model.manifest.inputs, Shape(batch_size=1, sequence_length=16), config)
    session = ort.InferenceSession(str(model.model_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    if not all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in outputs):
        raise AssertionError(f"{model_dir.name}: ONNX Runtime gave non-finite outputs")
    return model_dir


@dataclass
class Cells:
    """One kind's cells, in column order, each able to reuse what an earlier one made."""

    kind: Kind
    source: Source
    work: Path
    done: dict[str, Outcome] = field(default_factory=dict)

    def compress(self, model: Path, recipe: Any, out: str) -> Path:
        return slimline.compress(model, recipe=recipe, out=self.work / out, profile=fast_profile("cpu"),
                                 force=True).path

    def export(self) -> Path:
        return check_onnx_runs(slimline.export(self.source.model, out=self.work / "export", force=True).path)

    def run(self, profile: str, out: str) -> Path:
        report = slimline.run(**self.source.run_args, profile=fast_profile(profile), eval_data=self.source.data,
                              out=self.work / out, force=True, history=False)
        if report.verdict != "pass":
            failing = [f"{b.name}: {b.status}" for b in report.budgets if b.status != "pass"]
            raise AssertionError(f"verdict {report.verdict} ({', '.join(failing)})")
        return self.work / out

    def default_run(self) -> Path:
        return self.run("cpu", "run")

    def data_config(self) -> dict[str, Any]:
        return {"source": str(self.source.data), "split": "train"}

    def prune_distill(self, prune: list[dict[str, Any]] | None = None, distill: bool = True) -> Path:
        """Heads and FFN channels halved (the cpu-fast recipe's pruning), distilled on the kind's data, and the
        student exported (with the exporter's parity check), as `run --recipe cpu-fast` would go on to do."""
        steps = prune or [{"pass": "prune.structured",
                           "with": {"heads_ratio": 0.5, "ffn_ratio": 0.5, "preflight": PREFLIGHT}}]
        if distill:
            steps = [*steps, {"pass": "distill.kd", "with": {**DISTILL, "data": self.data_config()}}]
        student = self.compress(self.source.model, steps, "student")
        return check_onnx_runs(slimline.export(student, out=self.work / "student-export", force=True).path)

    def onnx_model(self) -> Path:
        """The kind's ONNX model: the export cell's, or the file itself for a model that arrives as ONNX."""
        export = self.done.get("export")
        if export is not None and export.status == "ok" and export.artifact is not None:
            return export.artifact
        if self.kind.arrives_as == "onnx":
            return self.source.model
        raise AssertionError("no ONNX model to quantize: the export cell did not make one")

    def static_int8(self) -> Path:
        """The shipped static INT8 recipe of the kind's profile (cpu-vision's for images), calibrated on its data."""
        image = self.kind.data.startswith("images")
        recipe = as_recipe("cpu-vision-int8-static" if image else "cpu-int8-static")
        options = recipe[0].config_dict()
        options["calibration"] = {**options["calibration"], "source": str(self.source.data)}
        return check_onnx_runs(self.compress(self.onnx_model(), [{"pass": recipe[0].name, "with": options}],
                                             "static-int8"))

    def four_bit(self) -> Path:
        recipe = "llm-int4" if self.kind.causal_lm else "int4-weight-only"
        return check_onnx_runs(self.compress(self.onnx_model(), recipe, "4-bit"))

    def package_verify(self) -> Path:
        ran = self.done.get("default-run")
        run = ran.followed if ran is not None and ran.followed is not None else ran
        if run is None or run.status != "ok" or run.artifact is None:
            raise AssertionError("no run to package: the default-profile cell did not finish one")
        bundle = slimline.package(run.artifact, out=self.work / "bundle", force=True)
        checked = slimline.verify(bundle.path).files_checked
        if not checked:
            raise AssertionError("verify checked no files")
        return bundle.path

    def cell(self, column: str) -> Outcome:
        actions = {"export": self.export, "default-run": self.default_run, "prune-distill": self.prune_distill,
                   "static-int8": self.static_int8, "4-bit": self.four_bit, "package-verify": self.package_verify}
        outcome = attempt(actions[column])
        self.done[column] = outcome
        return outcome

    def follow(self, name: str) -> Outcome:
        """Do what a refusal's fix says (FOLLOWS names and describes each)."""
        actions: dict[str, Callable[[], Path]] = {
            "ffn-and-layers": lambda: self.prune_distill([
                {"pass": "prune.structured", "with": {"heads_ratio": 0.0, "ffn_ratio": 0.5, "preflight": PREFLIGHT}},
                {"pass": "prune.layers", "with": {"drop": [1], "preflight": PREFLIGHT}}]),
            "prune-without-distill": lambda: self.prune_distill(distill=False),
            "llm-cpu-profile": lambda: self.run("llm-cpu", "run-llm-cpu"),
            "llm-int8-weight-only": lambda: check_onnx_runs(self.compress(self.onnx_model(), "llm-int8-weight-only",
                                                                          "int8-weight-only")),
        }
        return attempt(actions[name])


#: What each followed fix does, for docs/coverage.md.
FOLLOWS = {
    "ffn-and-layers": "`prune.structured {heads_ratio: 0, ffn_ratio: 0.5}` + `prune.layers {drop: [1]}` + "
                      "`distill.kd`, then `export`",
    "prune-without-distill": "`prune.structured {heads_ratio: 0.5, ffn_ratio: 0.5}` without `distill.kd`, then "
                             "`export`",
    "llm-cpu-profile": "`run --profile llm-cpu` (recipe llm-int8-weight-only; perplexity, prefill and decode "
                       "budgets) on the corpus",
    "llm-int8-weight-only": "`compress --recipe llm-int8-weight-only` on the export",
}
