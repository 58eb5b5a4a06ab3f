"""Side-by-side timing in blocks: what runs when, what is kept, and when it stops (slimline.core.timing)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimline.core.timing import block_plan, interleave_blocks, round_robin_ms


def recorders(count: int) -> tuple[list[str], list]:
    """Functions that log their name on every call and return the call's index as their sample."""
    calls: list[str] = []

    def make(name: str):
        counter = itertools.count()

        def run() -> int:
            calls.append(name)
            return next(counter)
        return run

    return calls, [make(chr(ord("a") + i)) for i in range(count)]


def runs_of(calls: list[str]) -> list[tuple[str, int]]:
    return [(name, len(list(group))) for name, group in itertools.groupby(calls)]


def test_each_block_drops_its_first_iterations_and_keeps_the_rest() -> None:
    calls, fns = recorders(3)
    measured = interleave_blocks(fns, warmup_iters=2, block_s=0.0, block_warmup_iters=2, min_block_iters=4,
                                 max_block_iters=4, min_iters=1, min_rounds=6, min_time_s=0.0)
    assert measured.round_count == 6 and [(p.dropped, p.kept) for p in measured.plans] == [(2, 4)] * 3
    timed = calls[3 * 2:]  # after each model's warm-up
    for model in range(3):
        samples = measured.pooled(model)
        assert len(samples) == 6 * 4
        # a model's samples are its 3rd-6th calls of each block: 2 warm-up calls, then 2 dropped per block
        expected = [2 + block * 6 + 2 + i for block in range(6) for i in range(4)]
        assert samples == expected
    # consecutive blocks of one model merge when the shuffle puts it last then first: every run is a multiple of 6
    assert all(length % 6 == 0 for _, length in runs_of(timed))


def test_the_order_of_the_models_is_shuffled_every_round_and_seeded() -> None:
    def order(seed: int) -> list[str]:
        calls, fns = recorders(4)
        interleave_blocks(fns, warmup_iters=1, block_s=0.0, block_warmup_iters=0, min_block_iters=1,
                          max_block_iters=1, min_iters=1, min_rounds=20, min_time_s=0.0, seed=seed)
        return calls[4:]

    first = order(7)
    rounds = [tuple(first[i:i + 4]) for i in range(0, len(first), 4)]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in rounds)
    assert len(set(rounds)) > 1, "every round ran the models in the same order"
    assert order(7) == first and order(8) != first


@given(iteration_s=st.floats(min_value=1e-6, max_value=10.0), block_s=st.floats(min_value=0.0, max_value=2.0),
       warmup=st.integers(min_value=0, max_value=5), low=st.integers(min_value=1, max_value=10),
       span=st.integers(min_value=0, max_value=50), cap_s=st.floats(min_value=0.0, max_value=1.0))
def test_a_block_fills_its_time_within_its_bounds_and_drops_only_cheap_iterations(
        iteration_s: float, block_s: float, warmup: int, low: int, span: int, cap_s: float) -> None:
    plan = block_plan(iteration_s, block_s=block_s, block_warmup_iters=warmup, min_block_iters=low,
                      max_block_iters=low + span, max_block_warmup_s=cap_s)
    assert low <= plan.kept <= low + span
    if low < plan.kept < low + span:  # not clamped: just enough iterations to fill the block
        assert (plan.kept - 1) * iteration_s < block_s <= plan.kept * iteration_s * (1 + 1e-9)
    assert 0 <= plan.dropped <= warmup
    assert plan.dropped * iteration_s <= cap_s + 1e-12


def test_a_long_iteration_is_not_thrown_away_as_warm_up() -> None:
    """A switch costs about a millisecond: a whole generation after it is not worth dropping."""
    assert block_plan(2.0, block_s=0.5, block_warmup_iters=1, min_block_iters=1, max_block_iters=10,
                      max_block_warmup_s=0.05).dropped == 0
    assert block_plan(0.005, block_s=0.1, block_warmup_iters=2, min_block_iters=3, max_block_iters=20,
                      max_block_warmup_s=0.05).dropped == 2


def test_timing_stops_at_its_time_cap_once_five_rounds_are_done() -> None:
    _, fns = recorders(2)
    measured = interleave_blocks(fns, warmup_iters=0, block_s=0.0, block_warmup_iters=0, min_block_iters=1,
                                 max_block_iters=1, min_iters=10**9, min_rounds=10**6, min_time_s=0.0,
                                 max_time_s=1e-9)
    assert measured.round_count == 5


def test_every_model_gets_at_least_min_iters_kept_samples() -> None:
    _, fns = recorders(2)
    measured = interleave_blocks(fns, warmup_iters=0, block_s=0.0, block_warmup_iters=1, min_block_iters=3,
                                 max_block_iters=3, min_iters=31, min_rounds=1, min_time_s=0.0)
    assert measured.round_count == math.ceil(31 / 3)
    assert all(len(measured.pooled(i)) >= 31 for i in range(2))


def test_the_old_round_robin_runs_one_iteration_of_each_model_per_round() -> None:
    calls: list[str] = []
    samples, rounds = round_robin_ms([lambda: calls.append("a"), lambda: calls.append("b")], warmup_iters=3,
                                     min_rounds=12, min_time_s=0.0)
    assert rounds == 12 and [len(s) for s in samples] == [12, 12]
    assert all(sorted(calls[6 + 2 * i: 8 + 2 * i]) == ["a", "b"] for i in range(12))
    assert all(t >= 0 for s in samples for t in s)


def test_nothing_to_time_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to time"):
        interleave_blocks([])
