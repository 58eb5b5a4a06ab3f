"""What a search leaves in --out after every trial: the trials table, the front, a plot, and the best so far.

Every file is written atomically (a temporary sibling renamed into place), and the best-so-far
directory (`best/`: the artifact, `best-recipe.yaml`, `trial.json`, `report.md`) is swapped in whole,
so a search killed at any moment leaves the previous complete best behind, never a half-written one.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slimline.benchmarking.report import markdown_table
from slimline.benchmarking.reporting.search_section import search_plot_svg
from slimline.core.artifact import atomic_directory, atomic_write_text
from slimline.pipeline.search.selection import AcceptanceRule, feasible
from slimline.pipeline.search.trial import TrialOutcome

log = logging.getLogger(__name__)
SEARCH_SCHEMA_VERSION = 1


@dataclass
class SearchState:
    """Everything the outputs are rendered from; rebuilt from the study's storage on resume."""

    space: str
    rule: AcceptanceRule
    reference: dict[str, Any]
    outcomes: list[TrialOutcome] = field(default_factory=list)
    verdicts: dict[int, dict[str, float]] = field(default_factory=dict)
    front: list[int] = field(default_factory=list)
    best: int | None = None
    best_reason: str = ""
    notes: list[str] = field(default_factory=list)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def recipe_summary(recipe: list[dict[str, Any]]) -> str:
    parts = []
    for step in recipe:
        options = ", ".join(f"{k}={v}" for k, v in step.get("with", {}).items()
                            if k not in ("fallback", "calibration", "learning_rate", "time_budget_s", "epochs",
                                         "importance"))
        parts.append(f"{step['pass']}({options})" if options else step["pass"])
    return " → ".join(parts) or "(fp32 export)"


def trial_rows(state: SearchState) -> list[dict[str, Any]]:
    rows = []
    for outcome in state.outcomes:
        verdict = state.verdicts.get(outcome.number, {})
        rows.append({
            "number": outcome.number, "ok": outcome.ok, "recipe": outcome.recipe, "error": outcome.error,
            "latency_p50_ms": outcome.latency_p50_ms, "latency_p95_ms": outcome.latency_p95_ms,
            "latency_ratio_vs_reference": outcome.latency_ratio_vs_reference, "size_mb": outcome.size_mb,
            "fidelity": outcome.fidelity, "constraints": verdict, "passes_screened_budgets":
                outcome.ok and feasible(verdict), "on_front": outcome.number in state.front,
            "model_dir": outcome.model_dir, "seconds": outcome.seconds, "repeat_of": outcome.repeat_of,
            "runtime": outcome.runtime, "rejected_before_build": outcome.rejected_before_build,
            "probe": outcome.probe, "stopped_early": outcome.stopped_early, "student_of": outcome.student_of})
    return rows


def trials_markdown(state: SearchState) -> str:
    rows = []
    for row in trial_rows(state):
        if row["repeat_of"] is not None:
            continue  # proposed again by the sampler: listed in trials.json, measured once
        fidelity, probe = row["fidelity"], row["probe"]
        mark = ("**best** " if row["number"] == state.best else "") + ("front" if row["on_front"] else "") + \
            (f" (trial {row['student_of']}'s student)" if row["student_of"] is not None else "")
        rows.append([str(row["number"]), recipe_summary(row["recipe"]),
                     _fmt(row["latency_p50_ms"]), _fmt(row["size_mb"], 1),
                     f"{fidelity['drop_pt']:.2f} ± {fidelity['drop_se_pt']:.2f}" if fidelity else "-",
                     f"{probe['drop_pt']:.2f} @ {int(probe['steps'])}" if probe else "-",
                     _fmt(fidelity.get("agreement_pct")), _fmt(fidelity.get("kl_divergence"), 4),
                     _passes_cell(row), mark])
    header = ["trial", "recipe", "p50 ms (normalised)", "size MB", "val. drop pt ± SE", "probe drop pt @ steps",
              "agreement %", "KL", "passes budgets", ""]
    reference = state.reference
    intro = [
        f"Space: `{state.space}`. Acceptance on accuracy: {state.rule.describe()}.",
        f"Latency: each trial timed side by side (blocks, one process) with the fp32 ONNX export and reported "
        f"as its ratio to it x the export's p50 at the start of the search ({reference.get('onnx_p50_ms', 0):.2f} ms; "
        f"torch fp32 eager {reference.get('torch_p50_ms', 0):.2f} ms).",
        "Probe: a student's validation drop (fp32) after a short distillation; a student whose best case "
        "cannot meet the accuracy budget is stopped there (slimline.pipeline.search.early_stop).",
        *state.notes,
    ]
    return "\n\n".join([*intro, markdown_table(header, rows)]) + "\n"


def _passes_cell(row: dict[str, Any]) -> str:
    if row["ok"]:
        return "yes" if row["passes_screened_budgets"] else "no"
    if row["stopped_early"]:
        return "no: stopped early (the probe cannot reach the accuracy budget)"
    return f"failed: {(row['error'] or '')[:80]}"


def trial_points(state: SearchState) -> list[dict[str, Any]]:
    """Every trial that ran, with its screened figures: the report's plot and table (bench.reporting)."""
    return [{"number": o.number, "recipe": recipe_summary(o.recipe), "latency_p50_ms": o.latency_p50_ms,
             "size_mb": o.size_mb, "drop_pt": o.fidelity["drop_pt"], "drop_se_pt": o.fidelity["drop_se_pt"],
             "agreement_pct": o.fidelity["agreement_pct"], "passes": feasible(state.verdicts[o.number]),
             "on_front": o.number in state.front}
            for o in state.outcomes if o.ok and o.repeat_of is None]


def front_svg(state: SearchState) -> str:
    """Drop vs latency of every trial with the Pareto front (the same figure as the HTML report's)."""
    search = {"points": trial_points(state), "chosen_trial": state.best, "reference": state.reference}
    return search_plot_svg(search, state.rule.budget_pt, None)


def write_trials(state: SearchState, out_dir: Path) -> None:
    rows = trial_rows(state)
    payload = {"schema_version": SEARCH_SCHEMA_VERSION, "space": state.space, "acceptance": state.rule.describe(),
               "reference": state.reference, "trials": rows, "front": state.front, "best": state.best,
               "best_reason": state.best_reason}
    atomic_write_text(out_dir / "trials.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out_dir / "front.json", json.dumps([r for r in rows if r["on_front"]], indent=2) + "\n")
    atomic_write_text(out_dir / "front.svg", front_svg(state) + "\n")
    markdown = trials_markdown(state) + "\n![accuracy drop vs latency, Pareto front](front.svg)\n"
    atomic_write_text(out_dir / "trials.md", "# slimline search: trials\n\n" + markdown)


def recipe_yaml(recipe: list[dict[str, Any]]) -> str:
    """Plain values, runnable as `slimline run --recipe best/best-recipe.yaml`."""
    return ("# The best recipe found by `slimline search` so far (plain values; run it with\n"
            "# `slimline run --recipe best-recipe.yaml`).\n" + yaml.safe_dump(recipe, sort_keys=False))


def write_best(state: SearchState, out_dir: Path) -> None:
    """Swap in best/ for the current best trial (only when it changed or is missing)."""
    outcome = next((o for o in state.outcomes if o.number == state.best), None)
    best_dir = out_dir / "best"
    if outcome is None or outcome.model_dir is None:
        return
    recorded = best_dir / "trial.json"
    if recorded.is_file() and json.loads(recorded.read_text()).get("number") == outcome.number:
        return
    row = next(r for r in trial_rows(state) if r["number"] == outcome.number)
    with atomic_directory(best_dir, replace=True) as tmp:
        shutil.copytree(outcome.model_dir, tmp / "model")
        (tmp / "best-recipe.yaml").write_text(recipe_yaml(outcome.recipe), encoding="utf-8")
        (tmp / "trial.json").write_text(json.dumps({**row, "why": state.best_reason,
                                                    "resolution": state.rule.resolution(outcome)}, indent=2) + "\n")
        (tmp / "report.md").write_text(
            f"# Best so far: trial {outcome.number}\n\n{state.best_reason}.\n\n- recipe: "
            f"{recipe_summary(outcome.recipe)}\n- p50 {_fmt(outcome.latency_p50_ms)} ms (normalised), size "
            f"{_fmt(outcome.size_mb, 1)} MB, validation drop {outcome.fidelity['drop_pt']:.2f} ± "
            f"{outcome.fidelity['drop_se_pt']:.2f} pt, agreement {outcome.fidelity['agreement_pct']:.2f}%\n"
            f"- {state.rule.resolution(outcome)}\n", encoding="utf-8")
    log.info("best so far: trial %d (%s)", outcome.number, state.best_reason)
