"""Decoder LLMs: prefill latency and decode tokens/s with the KV cache, measured apart.

A single forward over the prompt (the number every other model gets) says little about an LLM: the
prefill is compute-bound and runs once, while each generated token is one memory-bound step over
the cache. 4-bit weights pay off in the steps, not in the prefill, so both are reported. Each run
is a full greedy generation of `decode_tokens` tokens (no early EOS, so every run does the same
work) from the profile's prompt length; the prefill and the steps are timed apart.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel

from slimline.core.stats import median_ci
from slimline.formats.causal_lm import Decoder, TorchDecoder, greedy_generate
from slimline.profiles.schema import Measurement, Shape
from slimline.runtimes import get_runtime

MIN_DECODE_RUNS = 3


class DecodeStats(BaseModel):
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    runs: int
    prefill_p50_ms: float
    prefill_ci95_ms: tuple[float, float]
    decode_tokens_per_s: float  # median over runs of (batch x steps) / decode time
    decode_tokens_per_s_ci95: tuple[float, float] | None = None  # order statistics of the runs' rates
    decode_token_p50_ms: float  # median step latency over every step of every run
    decode_token_p90_ms: float
    decode_cv: float  # of the per-run tokens/s


def decoder_for(runner: Any, config: dict[str, Any]) -> Decoder | None:
    """A KV-cache decoder over the runner's loaded model, or None when it has no cache to decode with. A session
    runner's runtime makes it (a stateful OpenVINO IR keeps its cache in the request, ONNX Runtime feeds it)."""
    session = getattr(runner, "session", None)
    if session is not None:
        return get_runtime(runner.runtime_name).make_decoder(session, config)
    model = getattr(runner, "model", None)
    if model is not None and hasattr(model, "generate"):
        return TorchDecoder(model)
    return None


def measure_decode(decoder: Decoder, prompt_ids: np.ndarray, measurement: Measurement) -> DecodeStats:
    """Warm-up generations, then at least MIN_DECODE_RUNS and min_time_s, at most max_time_s."""
    new_tokens = measurement.decode_tokens
    for _ in range(min(measurement.warmup_iters, 2)):
        greedy_generate(decoder, prompt_ids, None, new_tokens)
    prefill, rates, steps = [], [], []
    started = time.perf_counter()
    while True:
        generation = greedy_generate(decoder, prompt_ids, None, new_tokens)
        prefill.append(generation.prefill_ms)
        rates.append(generation.decode_tokens_per_s())
        steps.extend(generation.step_ms)
        elapsed = time.perf_counter() - started
        if (len(rates) >= MIN_DECODE_RUNS and elapsed >= measurement.min_time_s) or elapsed >= measurement.max_time_s:
            break
    rates_array = np.asarray(rates)
    return DecodeStats(
        batch_size=int(prompt_ids.shape[0]), prompt_tokens=int(prompt_ids.shape[1]), new_tokens=new_tokens,
        runs=len(rates), prefill_p50_ms=float(np.median(prefill)),
        prefill_ci95_ms=median_ci(np.asarray(prefill)) if len(prefill) > 1 else (prefill[0], prefill[0]),
        decode_tokens_per_s=float(np.median(rates_array)), decode_tokens_per_s_ci95=median_ci(rates_array),
        decode_token_p50_ms=float(np.percentile(steps, 50)), decode_token_p90_ms=float(np.percentile(steps, 90)),
        decode_cv=float(rates_array.std(ddof=1) / rates_array.mean()) if len(rates) > 1 else 0.0,
    )


def prompt_for(shape: Shape, config: dict[str, Any], seed: int) -> np.ndarray:
    """Seeded token ids at the profile's prompt length: every model decodes from the same prompt."""
    vocab = int(config.get("vocab_size", 1000))
    low = 1000 if vocab > 2000 else 0  # skip special tokens on real vocabularies
    return np.random.default_rng(seed).integers(low, vocab, size=(shape.batch_size, shape.sequence_length))


def decode_results(runner: Any, config: dict[str, Any], shapes: list[Shape], measurement: Measurement,
                   seed: int) -> dict[str, dict[str, Any]] | None:
    """DecodeStats per shape (as dicts) for a runner that can decode with a cache, else None."""
    decoder = decoder_for(runner, config)
    if decoder is None:
        return None
    return {shape.label(): measure_decode(decoder, prompt_for(shape, config, seed), measurement).model_dump()
            for shape in shapes}


DECODE_HEADER = ["model", "prompt tokens", "prefill p50 ms", "new tokens", "decode tokens/s", "step p50 ms",
                 "step p90 ms", "decode speed-up alone", "runs"]


def decode_rows(results: list[Any]) -> list[list[str]]:
    """Report rows (CandidateResult in, first shape) for the models that were decoded with a cache."""
    rows = []
    for result in results:
        stats = result.primary_decode()
        if stats is None:
            continue
        speedup = result.decode_speedup_vs_baseline_alone if result.decode_speedup_vs_baseline_alone is not None \
            else result.decode_speedup_vs_baseline
        rows.append([result.label, str(stats["prompt_tokens"]), f"{stats['prefill_p50_ms']:.2f}",
                     str(stats["new_tokens"]), f"{stats['decode_tokens_per_s']:.1f}",
                     f"{stats['decode_token_p50_ms']:.2f}", f"{stats['decode_token_p90_ms']:.2f}",
                     "-" if speedup is None else f"{speedup:.2f}", str(stats["runs"])])
    return rows
