"""Which trials pass, which are on the Pareto front, and which is best: the rules, written once.

A trial passes a budget when its screened figure is within the limit: latency (normalised p50/p95 from
its interleaved timing), size, speed-up over torch fp32, and accuracy by the acceptance rule. The
accuracy rule compares the validation drop plus `confidence_z` paired standard errors with the budget;
with z = 0 the measured drop is compared as it is, and the report says what the validation set can
resolve, instead of silently giving speed away for a certainty the data cannot give. Peak memory and
the other percentiles are not screened: the final bench checks them on the chosen artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimline.pipeline.search.trial import TrialOutcome
from slimline.profiles.schema import Profile

#: Budgets screened on every trial; the final bench checks every budget of the profile.
SCREENED = ("accuracy_drop_pt", "accuracy_pct", "latency_p50_ms", "latency_p95_ms", "size_mb",
            "speedup_vs_baseline", "throughput_sps")
OBJECTIVES = ("latency_p50_ms", "drop_pt", "size_mb")


@dataclass(frozen=True)
class AcceptanceRule:
    budget_pt: float | None
    confidence_z: float = 0.0

    def upper_pt(self, outcome: TrialOutcome) -> float:
        return outcome.fidelity["drop_pt"] + self.confidence_z * outcome.fidelity["drop_se_pt"]

    def describe(self) -> str:
        if self.budget_pt is None:
            return "no accuracy budget: every trial is accepted on accuracy"
        if self.confidence_z == 0:
            return (f"validation drop vs fp32 <= {self.budget_pt:g} pt as measured (confidence_z 0); the final "
                    "bench re-measures the chosen artifact on the test split")
        return f"validation drop + {self.confidence_z:g} x paired SE <= {self.budget_pt:g} pt"

    def resolution(self, outcome: TrialOutcome) -> str:
        """What the validation set can certify around this trial's drop (its own paired SE)."""
        fidelity = outcome.fidelity
        if self.budget_pt is None or not fidelity:
            return ""
        se = fidelity["drop_se_pt"]
        certified = fidelity["drop_pt"] + se <= self.budget_pt
        return (f"{int(fidelity['examples'])} validation examples resolve ±{se:.2f} pt (paired SE) around this "
                f"drop of {fidelity['drop_pt']:.2f} pt; a {self.budget_pt:g} pt budget is certified (drop + 1 SE) only "
                f"below {max(self.budget_pt - se, 0):.2f} pt measured: "
                + ("certified." if certified else "NOT certified, within the budget only as measured."
                   if fidelity["drop_pt"] <= self.budget_pt else "over the budget."))


def accuracy_budget(profile: Profile) -> float | None:
    if "accuracy_drop_pt" in profile.budgets:
        return profile.budgets["accuracy_drop_pt"].limit
    budget = profile.budgets.get("accuracy_pct")
    return budget.limit if budget is not None and budget.kind == "max_drop" else None


def screened_figures(outcome: TrialOutcome, rule: AcceptanceRule, torch_p50_ms: float,
                     batch_size: int) -> dict[str, float]:
    p50 = outcome.latency_p50_ms or float("inf")
    return {"accuracy_drop_pt": rule.upper_pt(outcome), "accuracy_pct": rule.upper_pt(outcome),
            "latency_p50_ms": p50, "latency_p95_ms": outcome.latency_p95_ms or float("inf"),
            "size_mb": outcome.size_mb or float("inf"), "speedup_vs_baseline": torch_p50_ms / p50,
            "throughput_sps": batch_size * 1000.0 / p50}


def constraints(outcome: TrialOutcome, profile: Profile, rule: AcceptanceRule, torch_p50_ms: float) -> dict[str, float]:
    """Per screened budget: relative violation (<= 0 passes), Optuna's constraint convention."""
    figures = screened_figures(outcome, rule, torch_p50_ms, profile.shapes[0].batch_size)
    values = {}
    for metric in sorted(profile.budgets):
        if metric not in SCREENED:
            continue
        budget = profile.budgets[metric]
        measured, limit = figures[metric], budget.limit
        if budget.kind == "min":
            values[metric] = (limit - measured) / max(limit, 1e-9)
        else:  # max, and max_drop (accuracy_pct: the drop against the limit)
            values[metric] = (measured - limit) / max(limit, 1e-9) if limit > 0 else measured
    return values


def feasible(values: dict[str, float]) -> bool:
    return all(v <= 0 for v in values.values())


def objectives(outcome: TrialOutcome) -> tuple[float, float, float]:
    return (outcome.latency_p50_ms or float("inf"), outcome.fidelity.get("drop_pt", float("inf")),
            outcome.size_mb or float("inf"))


def pareto_front(outcomes: list[TrialOutcome]) -> list[TrialOutcome]:
    """Trials no other trial beats on every objective (latency, drop, size) at once."""
    done = [o for o in outcomes if o.ok and o.repeat_of is None]

    def dominates(a: TrialOutcome, b: TrialOutcome) -> bool:
        pa, pb = objectives(a), objectives(b)
        return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb

    return [o for o in done if not any(dominates(other, o) for other in done)]


def best(outcomes: list[TrialOutcome], verdicts: dict[int, dict[str, float]]) -> tuple[TrialOutcome | None, str]:
    """The fastest trial that passes every screened budget; else the one closest to passing (and why)."""
    done = [o for o in outcomes if o.ok and o.repeat_of is None]
    if not done:
        return None, "no trial finished yet"
    passing = [o for o in done if feasible(verdicts[o.number])]
    if passing:
        chosen = min(passing, key=lambda o: (o.latency_p50_ms, o.fidelity["drop_pt"]))
        return chosen, "the fastest trial that passes every screened budget"
    chosen = min(done, key=lambda o: (sum(max(v, 0.0) for v in verdicts[o.number].values()), o.latency_p50_ms))
    return chosen, "no trial passes every screened budget: the one closest to passing"
