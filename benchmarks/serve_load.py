"""Regenerate bench/results/serve-cpu.{json,md}: `slimline serve` on the demo bundle under a bounded load.

Localhost only. The server runs in a subprocess on a free 127.0.0.1 port; the client sends a fixed number
of single-text requests at each concurrency level (httpx, one timeout per request, one time limit for
the whole test) and measures throughput and p50/p95/p99 latency as the client sees it. Every answer is
checked against the bundle's ONNX engine run directly in this process on the same texts (tokenised the
same way): a request that times out, fails or gets another text's answer is counted, and any such
request fails the run (exit 1). Client and server share the machine's cores, as they would on one host.

Usage: python -m benchmarks.serve_load [--bundle DIR] [--requests 500] [--concurrency 1,4,16] [--timeout-s 10]
                                  [--time-limit-s 900] [--micro-batch N] [--results-dir bench/results]
Without --bundle it builds the demo bundle: the cached demo checkpoint, `run` with the cpu profile into
--work (reused when its report.json exists), then `package`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from benchmarks import add_results_dir_argument
from slimline.benchmarking.report import markdown_table, write_results
from slimline.core.machine import library_versions, machine_info
from slimline.deploy.manifest import BundleManifest, read_manifest

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180
DEMO_BUNDLE_NAME = "minilm-l6-rotten-tomatoes"


class LevelResult(BaseModel):
    concurrency: int
    planned: int
    sent: int
    ok: int
    wrong: int
    lost: int = Field(description="timed out, connection failed, or not 200")
    not_sent: int = Field(description="left unsent when the time limit ran out")
    wall_s: float
    throughput_rps: float
    latency_ms: dict[str, float]
    server_latency_p50_ms: float | None
    max_score_diff: float
    errors: list[str] = Field(default_factory=list)


class ServeLoadReport(BaseModel):
    schema_version: int = 1
    created_at: str
    machine: dict[str, Any]
    versions: dict[str, str]
    bundle: dict[str, Any]
    settings: dict[str, Any]
    levels: list[LevelResult]
    checks: dict[str, bool]
    passed: bool
    notes: list[str] = Field(default_factory=list)


def build_demo_bundle(work: Path, profile_name: str) -> Path:
    from slimline.deploy.bundle import package
    from slimline.pipeline.demo import ensure_demo_checkpoint
    from slimline.pipeline.plan import RunRequest
    from slimline.pipeline.run import run
    from slimline.profiles.schema import load_profile

    run_dir, bundle = work / "run", work / "bundle"
    if not (run_dir / "report.json").is_file():
        checkpoint = ensure_demo_checkpoint()
        run(RunRequest(checkpoint=checkpoint.path, profile=load_profile(profile_name), out_dir=run_dir))
    package(run_dir, bundle, name=DEMO_BUNDLE_NAME, replace=True)
    return bundle


def load_texts(count: int) -> list[str]:
    from slimline.core.data import DatasetSpec, load_dataset

    texts = load_dataset(DatasetSpec(source="rotten-tomatoes", split="test")).texts
    return [texts[i % len(texts)] for i in range(count)]


def reference_predictions(bundle: Path, manifest: BundleManifest, texts: list[str]) -> dict[str, tuple[str, float]]:
    """The engine run directly with onnxruntime, one text per run as the server runs a one-text request."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = manifest.profile.target.threads
    session = ort.InferenceSession(str(bundle / manifest.engine), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tokenizer = AutoTokenizer.from_pretrained(bundle / manifest.preprocessing)
    max_length = max(s.sequence_length for s in manifest.profile.shapes)
    answers: dict[str, tuple[str, float]] = {}
    for text in dict.fromkeys(texts):
        encoded = tokenizer([text], padding="longest", truncation=True, max_length=max_length, return_tensors="np")
        logits = session.run(None, {k: v.astype(np.int64) for k, v in encoded.items() if k in names})[0][0]
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        best = int(probabilities.argmax())
        answers[text] = (manifest.labels[best], float(probabilities[best]))
    return answers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, port: int, log: Path, micro_batch: int) -> subprocess.Popen:
    import httpx

    slimline = Path(sys.executable).with_name("slimline")  # the installed console script
    command = [str(slimline), "serve", str(bundle), "--host", HOST, "--port", str(port)]
    if micro_batch:
        command += ["--micro-batch", str(micro_batch)]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.25)
    process.kill()
    raise RuntimeError(f"the server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "mean": round(float(array.mean()), 3), "min": round(float(array.min()), 3),
            "max": round(float(array.max()), 3)}


async def run_level(client: Any, concurrency: int, texts: list[str], expected: dict[str, tuple[str, float]],
                    timeout_s: float, deadline: float, score_tolerance: float) -> LevelResult:
    import httpx

    latencies, server_latencies, errors = [], [], []
    counts = {"sent": 0, "ok": 0, "wrong": 0, "lost": 0}
    max_diff = 0.0
    queue = iter(enumerate(texts))

    async def worker() -> None:
        nonlocal max_diff
        for _index, text in queue:
            if time.monotonic() >= deadline:
                return
            counts["sent"] += 1
            started = time.perf_counter()
            try:
                response = await client.post("/v1/predict", json={"texts": [text]}, timeout=timeout_s)
            except httpx.HTTPError as err:
                counts["lost"] += 1
                errors.append(f"{type(err).__name__}: {err}")
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                counts["lost"] += 1
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            body = response.json()
            [prediction] = body["predictions"]
            label, score = expected[text]
            diff = abs(prediction["score"] - score)
            max_diff = max(max_diff, diff)
            if prediction["label"] != label or diff > score_tolerance:
                counts["wrong"] += 1
                errors.append(f"wrong answer for {text[:40]!r}: {prediction} != {(label, score)}")
                continue
            counts["ok"] += 1
            latencies.append(elapsed_ms)
            server_latencies.append(body["latency_ms"])

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall_s = time.perf_counter() - started
    return LevelResult(
        concurrency=concurrency, planned=len(texts), **counts, not_sent=len(texts) - counts["sent"],
        wall_s=round(wall_s, 3), throughput_rps=round(counts["ok"] / wall_s, 2) if wall_s > 0 else 0.0,
        latency_ms=_percentiles(latencies),
        server_latency_p50_ms=round(float(np.median(server_latencies)), 3) if server_latencies else None,
        max_score_diff=max_diff, errors=errors[:5],
    )


async def run_levels(url: str, args: argparse.Namespace, texts_by_level: list[list[str]],
                     expected: dict[str, tuple[str, float]]) -> tuple[list[LevelResult], str, int]:
    import httpx

    deadline = time.monotonic() + args.time_limit_s
    limits = httpx.Limits(max_connections=max(args.concurrency), max_keepalive_connections=max(args.concurrency))
    results, warmup_ok = [], 0
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        for concurrency, texts in zip(args.concurrency, texts_by_level, strict=True):
            warmup = await asyncio.gather(*[client.post("/v1/predict", json={"texts": [t]}, timeout=args.timeout_s)
                                            for t in texts[: args.warmup]], return_exceptions=True)
            warmup_ok += sum(1 for r in warmup if not isinstance(r, BaseException) and r.status_code == 200)
            level = await run_level(client, concurrency, texts, expected, args.timeout_s, deadline,
                                    args.score_tolerance)
            p50, p99 = (level.latency_ms.get(key, float("nan")) for key in ("p50", "p99"))
            print(f"concurrency {concurrency:3d}: {level.ok}/{level.planned} ok, {level.wrong} wrong, "
                  f"{level.lost} lost, {level.throughput_rps:.1f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms",
                  flush=True)
            results.append(level)
        metrics = (await client.get("/metrics", timeout=args.timeout_s)).text
    return results, metrics, warmup_ok


def counted_ok(metrics: str) -> float:
    prefix = 'slimline_requests_total{code="200",endpoint="/v1/predict"}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def render_markdown(report: ServeLoadReport) -> str:
    machine, bundle, settings = report.machine, report.bundle, report.settings
    rows = [[str(lv.concurrency), f"{lv.ok}/{lv.planned}", str(lv.wrong), str(lv.lost), str(lv.not_sent),
             f"{lv.throughput_rps:.1f}", *[f"{lv.latency_ms.get(k, float('nan')):.2f}" for k in ("p50", "p95", "p99")],
             "-" if lv.server_latency_p50_ms is None else f"{lv.server_latency_p50_ms:.2f}"]
            for lv in report.levels]
    checks = [[name, "yes" if ok else "**NO**"] for name, ok in report.checks.items()]
    return "\n".join([
        f"# slimline serve under load: {bundle['name']} - **{'PASS' if report.passed else 'FAIL'}**",
        "",
        f"- created: {report.created_at}",
        f"- machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} cores), {machine.get('os')}",
        f"- bundle: `{bundle['name']}` model version `{bundle['model_version']}`, profile `{bundle['profile']}` "
        f"({bundle['threads']} ONNX Runtime threads), manifest sha256 `{bundle['manifest_sha256'][:12]}`",
        f"- load: {settings['requests_per_level']} single-text requests per level after {settings['warmup']} warm-up, "
        f"timeout {settings['timeout_s']} s each, {settings['time_limit_s']} s for the whole test, micro-batching "
        f"{settings['micro_batch'] or 'off'}; texts from {settings['texts']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report.versions.items())}",
        "",
        "Latency is what the client saw, localhost HTTP included; client and server share the cores.",
        "",
        markdown_table(["concurrency", "ok", "wrong", "lost", "not sent", "req/s", "p50 ms", "p95 ms", "p99 ms",
                        "server p50 ms"], rows),
        "",
        markdown_table(["check", "ok"], checks),
        *(["", "## Notes", "", *[f"- {note}" for note in report.notes]] if report.notes else []),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle directory (default: build the demo bundle in --work)")
    parser.add_argument("--work", default="runs/bench-serve-cpu")
    parser.add_argument("--profile", default="cpu", help="profile for the demo run (without --bundle)")
    parser.add_argument("--requests", type=int, default=500, help="requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests before each level")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per request")
    parser.add_argument("--time-limit-s", type=float, default=900.0, help="for all levels together")
    parser.add_argument("--micro-batch", type=int, default=0, help="server micro-batch size (0: off)")
    parser.add_argument("--score-tolerance", type=float, default=1e-4,
                        help="max |score - direct run|; micro-batching a dynamic-int8 engine exceeds it by design")
    parser.add_argument("--name", default="serve-cpu")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = Path(args.bundle) if args.bundle else build_demo_bundle(work, args.profile)
    manifest = read_manifest(bundle)
    all_texts = load_texts(args.requests * len(args.concurrency))
    texts_by_level = [all_texts[i * args.requests : (i + 1) * args.requests] for i in range(len(args.concurrency))]
    print(f"reference: running {len(set(all_texts))} texts through {manifest.engine} directly", flush=True)
    expected = reference_predictions(bundle, manifest, all_texts)
    port = free_port()
    process = start_server(bundle, port, work / "serve.log", args.micro_batch)
    try:
        levels, metrics, warmup_ok = asyncio.run(run_levels(f"http://{HOST}:{port}", args, texts_by_level, expected))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = -9
    answered = sum(lv.ok + lv.wrong for lv in levels) + warmup_ok
    checks = {
        "no request lost": all(lv.lost == 0 for lv in levels),
        "no wrong answer": all(lv.wrong == 0 for lv in levels),
        "finished within the time limit": all(lv.not_sent == 0 for lv in levels),
        "server counted every answered request": counted_ok(metrics) == answered,
        "clean shutdown on SIGTERM (exit 0)": exit_code == 0,
    }
    report = ServeLoadReport(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=machine_info(),
        versions=library_versions(),
        bundle={"path": str(bundle), "name": manifest.name, "model_version": manifest.model_version,
                "format": manifest.format, "profile": manifest.profile.name,
                "threads": manifest.profile.target.threads, "verdict": manifest.verdict,
                "manifest_sha256": hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()},
        settings={"requests_per_level": args.requests, "warmup": args.warmup, "concurrency": args.concurrency,
                  "timeout_s": args.timeout_s, "time_limit_s": args.time_limit_s, "micro_batch": args.micro_batch,
                  "score_tolerance": args.score_tolerance, "texts": "rotten-tomatoes test split, one per request",
                  "host": HOST, "client": "httpx.AsyncClient", "cpu_count": os.cpu_count()},
        levels=levels, checks=checks, passed=all(checks.values()),
    )
    json_path, _ = write_results(Path(args.results_dir), args.name, json.dumps(report.model_dump(mode="json"),
                                 indent=2) + "\n", render_markdown(report))
    print(f"wrote {json_path} and .md; {'PASS' if report.passed else 'FAIL'}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
