"""Students stopped early: a short distillation first, the full one only for students that can still pass.

Distilling a student is most of a trial's cost (minutes), and many students cannot reach the accuracy
budget whatever their quantization. So a trial with a student first builds a *probe*: the same student
distilled for `probe_steps` only. The probe is its own content-addressed stage, so every scheme and
runtime later sampled with that student reuses it, as they reuse the fully distilled student. The probe
is screened in fp32 (as the profile's runtime loads it) on the validation split against the fp32
reference, and the trial is stopped when even the largest improvement seen so far, from a probe to its
finished trial (longer distillation and quantization included), cannot bring its drop within the
accuracy budget:

    probe drop - best gain seen - 1 paired SE > accuracy budget  ->  stopped early

The rule is deliberately optimistic: it stops only students that cannot reach the feasible front,
never one that merely looks worse than the median (a more pruned student is expected to start worse
and may still be the fastest that passes). Until a student with a probe has finished, nothing is
stopped: there is no gain to calibrate against.

Why not Optuna's pruners: `Trial.report` and `should_prune` are single-objective only, and this study
has three objectives (latency, accuracy drop, size). A stopped trial is told to the study as PRUNED
with its accuracy constraint violated, so the sampler treats its region as infeasible.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DISTILL_PASS = "distill.kd"
#: A student distilled for fewer than this many times the probe is not probed (the probe would cost too much).
MIN_STEPS_PER_PROBE = 3


def probe_recipe(recipe: Sequence[dict[str, Any]], probe_steps: int) -> list[dict[str, Any]] | None:
    """The recipe's steps up to its distillation, distilled for `probe_steps`; None when there is nothing
    worth probing (no distillation, or one too short for a probe to save anything)."""
    index = next((i for i, step in enumerate(recipe) if step.get("pass") == DISTILL_PASS), None)
    if index is None:
        return None
    options = dict(recipe[index].get("with") or {})
    max_steps = options.get("max_steps")
    if not isinstance(max_steps, int) or max_steps < MIN_STEPS_PER_PROBE * probe_steps:
        return None
    options["max_steps"] = probe_steps
    prefix = copy.deepcopy(list(recipe[:index]))
    return [*prefix, {**recipe[index], "with": options}]


@dataclass(frozen=True)
class Calibration:
    """What finished students say about how much a probe's drop improves by the end of its trial."""

    probe_steps: int
    students: int  # finished trials that had a probe of this length
    best_gain_pt: float | None  # the largest (probe drop - final validation drop); None: no student yet

    @classmethod
    def of(cls, finished: Sequence[tuple[dict[str, float], dict[str, float]]], probe_steps: int) -> Calibration:
        """`finished`: (probe, final fidelity) of each finished trial whose probe had `probe_steps` steps."""
        gains = [probe["drop_pt"] - final["drop_pt"] for probe, final in finished
                 if probe.get("steps") == probe_steps and "drop_pt" in final]
        return cls(probe_steps, len(gains), max(gains) if gains else None)


def stop_reason(probe: dict[str, float], calibration: Calibration, budget_pt: float | None) -> str | None:
    """Why this student cannot reach the accuracy budget, or None to go on with the full distillation."""
    if budget_pt is None or calibration.best_gain_pt is None:
        return None
    gain = max(calibration.best_gain_pt, 0.0)
    best_case = probe["drop_pt"] - gain - probe["drop_se_pt"]
    if best_case <= budget_pt:
        return None
    return (f"stopped early: after {int(probe['steps'])} distillation steps the student's validation drop is "
            f"{probe['drop_pt']:.2f} ± {probe['drop_se_pt']:.2f} pt; the largest improvement seen from a probe to its "
            f"finished trial is {gain:.2f} pt ({calibration.students} student(s)), so its best case "
            f"{best_case:.2f} pt cannot meet the {budget_pt:g} pt accuracy budget")
