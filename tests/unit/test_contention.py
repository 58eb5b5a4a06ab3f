"""The side-by-side timing's threading chosen by measuring what other processes take (issue 19: verdicts that
hold on a quiet and on a loaded machine)."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from slimline.benchmarking.interleaved import InterleavedSpec, resolve_threading
from slimline.benchmarking.runners import RunnerSpec
from slimline.core import contention
from slimline.core.contention import Contention, measure_contention
from slimline.profiles.schema import Measurement, Shape


def _spec(threading: str) -> InterleavedSpec:
    runner = RunnerSpec(label="m", runtime="onnxruntime", model_path="m.onnx", model_dir=".", model_format="onnx",
                        task="text-classification", device="cpu", precision="fp32", threads=2, inputs=[],
                        shapes=[Shape(batch_size=1, sequence_length=8)], measurement=Measurement())
    return InterleavedSpec(runners=[runner], shape=Shape(batch_size=1, sequence_length=8), threading=threading)


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_default_measurement_chooses_its_threading_by_measuring() -> None:
    assert Measurement().side_by_side_threading == "auto"


@pytest.mark.parametrize(("others", "chosen"), [(0.05, "runtime-defaults"), (1.9, "passive")])
def test_auto_waits_passively_only_when_others_keep_the_cores_busy(monkeypatch: pytest.MonkeyPatch, others: float,
                                                                   chosen: str) -> None:
    monkeypatch.setattr(contention, "measure_contention", lambda window_s=1.0: Contention(others, 2, window_s))
    spec, reason = resolve_threading(_spec("auto"))
    assert spec.threading == chosen and reason is not None and f"{others:.2f} of 2 cores" in reason


def test_an_explicit_threading_is_kept_without_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contention, "measure_contention", lambda window_s=1.0: pytest.fail("measured"))
    for threading in ("runtime-defaults", "passive"):
        assert resolve_threading(_spec(threading)) == (_spec(threading), None)


def test_where_cpu_use_cannot_be_read_each_runtime_keeps_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contention, "measure_contention", lambda window_s=1.0: None)
    spec, reason = resolve_threading(_spec("auto"))
    assert spec.threading == "runtime-defaults" and "cannot be read" in (reason or "")


def test_the_probe_sees_a_process_burning_a_core() -> None:
    """A busy-looping child takes a whole core; the probe (this process asleep) must count at least most of it,
    whatever else the machine runs."""
    if measure_contention(0.1) is None:
        pytest.skip("no /proc/stat on this platform")
    burner = multiprocessing.get_context("spawn").Process(target=_burn, args=(3.0,))
    burner.start()
    try:
        time.sleep(0.5)  # the child's interpreter starts
        loaded = measure_contention(1.0)
    finally:
        burner.join()
    assert loaded is not None and loaded.others_busy_cores >= 0.8 and loaded.busy, loaded
