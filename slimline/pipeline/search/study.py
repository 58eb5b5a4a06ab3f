"""The Optuna study behind `slimline search`: created in --out (SQLite), resumed, and kept honest.

The study's storage is `OUT/search.db`: a rerun with the same --out continues from the finished
trials. A fingerprint of what the trials depend on (checkpoint, profile, space, eval data, CPU flags,
acceptance rule) is stored with the study, so a rerun that changed any of them is refused rather than
mixing incomparable trials. Trials left RUNNING by a killed search are marked failed and queued again
with the same parameters (their finished stages are reused).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimline.core.deps import require
from slimline.core.errors import OutputError

log = logging.getLogger(__name__)
STUDY_NAME = "slimline-search"
STORAGE_FILE = "search.db"
OBJECTIVE_DIRECTIONS = ["minimize", "minimize", "minimize"]  # latency, accuracy drop, size


def open_study(out_dir: Path, fingerprint: dict[str, Any], seed: int) -> tuple[Any, bool]:
    """The study in OUT/search.db (created when absent); returns it and whether it is new."""
    optuna = require("optuna", purpose="slimline search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out_dir / STORAGE_FILE).resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    # multivariate + group: the space is conditional (a student's parameters exist only when it is on);
    # constant_liar keeps parallel (Ray) trials from being proposed the same parameters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True, group=True,
                                             constant_liar=True)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=OBJECTIVE_DIRECTIONS,
                                sampler=sampler, load_if_exists=True)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        return study, True
    changed = sorted(key for key in set(stored) | set(fingerprint) if stored.get(key) != fingerprint.get(key))
    if changed:
        raise OutputError(f"{out_dir} holds a search whose {', '.join(changed)} differ(s) from this one; its trials "
                          "are not comparable with new ones.",
                          fix="use a new --out for a different checkpoint, profile, space or data (or delete "
                              f"{out_dir / STORAGE_FILE} to start over).")
    return study, False


@contextmanager
def exploring(study: Any, explore: bool, seed: int) -> Iterator[None]:
    """With `explore`, trials asked and sampled inside draw from a seeded random sampler instead of the
    study's (queued trials are still taken first): the way out when TPE, converged on a mostly discrete
    space, keeps proposing recipes that already finished. Optuna samples at `suggest_*` time, so the
    sampling must happen inside too."""
    if not explore:
        yield
        return
    optuna = require("optuna", purpose="slimline search")
    sampler, study.sampler = study.sampler, optuna.samplers.RandomSampler(seed=seed)
    try:
        yield
    finally:
        study.sampler = sampler


def requeue_interrupted(study: Any) -> int:
    """Mark trials a killed search left RUNNING as failed and enqueue their parameters again."""
    optuna = require("optuna", purpose="slimline search")
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
        log.warning("trial %d was interrupted; it runs again with the same parameters", trial.number)
    return len(running)


def finished_trials(study: Any) -> list[Any]:
    optuna = require("optuna", purpose="slimline search")
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if "outcome" in t.user_attrs]


def tell(study: Any, trial: Any, values: tuple[float, float, float] | None, constraints: dict[str, float],
         outcome: dict[str, Any]) -> None:
    """Record a finished trial: its outcome, its budget constraints (<= 0 passes; the sampler prefers
    feasible trials), then its objective values (or a failure)."""
    optuna = require("optuna", purpose="slimline search")
    trial.set_user_attr("outcome", outcome)
    for metric, value in constraints.items():
        trial.set_constraint(metric, value)
    if values is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, list(values))


def stopped_constraints(probe: dict[str, float] | None, budget_pt: float | None) -> dict[str, float]:
    """A stopped trial's accuracy constraint: its probe's drop against the budget (> 0: infeasible)."""
    if probe is None or budget_pt is None:
        return {}
    return {"accuracy_drop_pt": (probe["drop_pt"] - budget_pt) / max(budget_pt, 1e-9)}


def prune(study: Any, trial: Any, constraints: dict[str, float], outcome: dict[str, Any]) -> None:
    """Record a trial that was stopped early (slimline.pipeline.search.early_stop) or refused before building
    as PRUNED with a constraint violated: TPE ranks it with the infeasible trials, so the sampler learns the
    region cannot pass (a FAIL trial it would ignore)."""
    optuna = require("optuna", purpose="slimline search")
    trial.set_user_attr("outcome", outcome)
    for metric, value in constraints.items():
        trial.set_constraint(metric, value)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def fail(study: Any, trial: Any) -> None:
    optuna = require("optuna", purpose="slimline search")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
