"""Regenerate bench/results/preflight-refusals.{json,md}: issue 18's hostile inputs, before and after the fix.

Each case runs the `slimline` console script under `/usr/bin/time -v` (exit code, wall time, peak RSS of
the process tree's largest member) on a tiny BERT and the files the issue describes: a truncated
history, a malformed tokenizer.json, absurd config sizes, `max_time_s: 1e308`, a CSV with a million
columns and one with a 200 MB line, `verify --key /dev/zero` and a FIFO, a forged archive padded to
300 MB; plus `kill -9` of a run during bench (is the worker still alive, is its /tmp directory swept)
and `serve` (200 half-header connections, /v1/generate's codes). `--code DIR` runs another checkout's
slimline (a `git archive` of the old commit) through PYTHONPATH, for the "before" column; a second
call with another `--label` adds its column to the same results.

Usage: python -m benchmarks.preflight_refusals --label after
       python -m benchmarks.preflight_refusals --label before --code /tmp/slimline-before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import add_results_dir_argument

NAME = "preflight-refusals"
CASE_TIMEOUT_S = 900
HANG_TIMEOUT_S = 60


def _slimline() -> str:
    script = Path(sys.executable).with_name("slimline")
    return str(script) if script.is_file() else "slimline"


def _env(code: Path | None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", **extra}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def timed(argv: list[str], work: Path, code: Path | None, timeout_s: float = CASE_TIMEOUT_S,
          **env: str) -> dict[str, Any]:
    """Exit code, wall seconds and peak RSS (MB) of one command, from /usr/bin/time -v."""
    started = time.monotonic()
    process = subprocess.Popen(["/usr/bin/time", "-v", *argv], cwd=work, env=_env(code, **env),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"exit": "hang", "wall_s": round(time.monotonic() - started, 1), "peak_rss_mb": None,
                "note": f"killed after {timeout_s:.0f} s"}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    status = re.search(r"Exit status: (\d+)", stderr)
    killed = re.search(r"Command terminated by signal (\d+)", stderr)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.group(1).split(":")))) if wall else None
    errors = [line for line in stderr.splitlines() if line.startswith(("error", "unexpected error"))]
    return {"exit": f"signal {killed.group(1)}" if killed else int(status.group(1)) if status else process.returncode,
            "wall_s": round(seconds, 1) if seconds is not None else None,
            "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
            "note": errors[0][:160] if errors else ""}


# --- the files the issue describes ----------------------------------------------------------------------------


def prepare(work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_tiny_bert

    from slimline.deploy.bundle import package
    from slimline.deploy.signing import generate_keypair, load_private_key, sign_bundle
    from slimline.history.records import record_run
    from slimline.pipeline.single import export_to

    paths: dict[str, Path] = {}
    bert = make_tiny_bert(work / "bert", initializer_range=0.2)
    paths["bert"] = bert
    repo = Path(__file__).resolve().parents[1]
    fast = (repo / "tests" / "fixtures" / "fast-cpu.yaml").read_text()
    (work / "fast.yaml").write_text(fast)
    (work / "huge.yaml").write_text(fast.replace("max_time_s: 5.0", "max_time_s: 1e308"))
    (work / "slow.yaml").write_text(fast.replace("min_time_s: 0.0, max_time_s: 5.0",
                                                 "min_time_s: 120, max_time_s: 150"))
    rows = ["text,label"] + [f"{'the film was good' if i % 2 else 'boring plot'},{'pos' if i % 2 else 'neg'}"
                              for i in range(60)]
    (work / "reviews.csv").write_text("\n".join(rows) + "\n")

    def broken(name: str, edit: Callable[[Path], None]) -> None:
        copy = Path(shutil.copytree(bert, work / name))
        edit(copy)
        paths[name] = copy

    def config(**changes: object) -> Callable[[Path], None]:
        def apply(path: Path) -> None:
            data = json.loads((path / "config.json").read_text())
            data.update(changes)
            (path / "config.json").write_text(json.dumps(data))
        return apply

    broken("bert-tokenizer", lambda p: (p / "tokenizer.json").write_text((p / "tokenizer.json").read_text()[:100]))
    broken("bert-hidden-1e9", config(hidden_size=1e9))
    broken("bert-positions-1e12", config(max_position_embeddings=10**12))
    broken("bert-nan-heads", config(num_attention_heads=float("nan")))
    broken("bert-no-labels", config(id2label={}, label2id={}))
    broken("bert-id2label-3", config(id2label={"0": "neg", "1": "pos", "2": "meh"},  # the data's labels, and one more
                                     label2id={"neg": 0, "pos": 1, "meh": 2}))

    history = work / "truncated.sqlite"
    sys.path.insert(0, str(repo / "tests"))
    from unit.test_history import make_report

    for _ in range(20):
        record_run(make_report(), "run", work, history)
    with open(history, "r+b") as handle:
        handle.truncate(history.stat().st_size // 2)

    with open(work / "columns.csv", "wb") as handle:
        handle.write(b"text,label," + b",".join(b"c%d" % i for i in range(1_000_000)) + b"\nfilm,pos\n")
    with open(work / "line.csv", "wb") as handle:
        handle.write(b"text,label\n")
        for _ in range(200):
            handle.write(b"x" * (1 << 20))
        handle.write(b",pos\n")

    exported = export_to(bert, work / "onnx")
    bundle = Path(package(exported.path, work / "bundle" / "tiny", name="tiny-bert").path)
    private, public = generate_keypair(work / "publisher")
    other_private, _ = generate_keypair(work / "attacker")
    sign_bundle(bundle, load_private_key(private))
    paths.update(bundle=bundle, public=public)
    forged = Path(shutil.copytree(bundle, work / "forged" / "tiny"))
    padding = forged / "preprocessing" / "padding.bin"
    with open(padding, "wb") as handle:
        for _ in range(300):
            handle.write(os.urandom(1 << 20))
    manifest = json.loads((forged / "manifest.json").read_text())
    import hashlib

    manifest["files"]["preprocessing/padding.bin"] = hashlib.sha256(padding.read_bytes()).hexdigest()
    manifest["file_sizes"]["preprocessing/padding.bin"] = padding.stat().st_size
    (forged / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(forged, load_private_key(other_private))
    from slimline.deploy.archive import write_archive

    paths["forged"] = write_archive(forged, work / "forged.tar.gz")
    shutil.rmtree(forged.parent)
    fifo = work / "key.fifo"
    os.mkfifo(fifo)
    paths["fifo"] = fifo
    return paths


def cli_cases(paths: dict[str, Path], work: Path) -> dict[str, tuple[str, list[str], float]]:
    run = [_slimline(), "run", "--profile", str(work / "fast.yaml"), "--eval-data", str(work / "reviews.csv")]
    out = str(work / "out")
    return {
        "history: truncated database (run)": ("5", [*run, "--checkpoint", str(paths["bert"]), "--out", out,
                                                    "--history", str(work / "truncated.sqlite")], CASE_TIMEOUT_S),
        "tokenizer.json cut off (run)": ("6", [*run, "--checkpoint", str(paths["bert-tokenizer"]), "--out", out,
                                               "--no-history"], CASE_TIMEOUT_S),
        "config hidden_size 1e9 (run)": ("6", [*run, "--checkpoint", str(paths["bert-hidden-1e9"]), "--out", out,
                                               "--no-history"], CASE_TIMEOUT_S),
        "config max_position_embeddings 1e12 (run)": ("6", [*run, "--checkpoint", str(paths["bert-positions-1e12"]),
                                                            "--out", out, "--no-history"], CASE_TIMEOUT_S),
        "config num_attention_heads NaN (run)": ("6", [*run, "--checkpoint", str(paths["bert-nan-heads"]), "--out",
                                                       out, "--no-history"], CASE_TIMEOUT_S),
        "config id2label {} (run)": ("6", [*run, "--checkpoint", str(paths["bert-no-labels"]), "--out", out,
                                           "--no-history"], CASE_TIMEOUT_S),
        "config id2label 3 vs head 2 (run)": ("6", [*run, "--checkpoint", str(paths["bert-id2label-3"]), "--out", out,
                                                    "--no-history"], CASE_TIMEOUT_S),
        "profile max_time_s 1e308 (run)": ("7", [_slimline(), "run", "--profile", str(work / "huge.yaml"),
                                                 "--checkpoint", str(paths["bert"]), "--out", out, "--no-history"],
                                           CASE_TIMEOUT_S),
        "CSV with 1,000,000 columns (run)": ("9", [_slimline(), "run", "--profile", str(work / "fast.yaml"),
                                                  "--checkpoint", str(paths["bert"]), "--out", out, "--no-history",
                                                  "--eval-data", str(work / "columns.csv")], CASE_TIMEOUT_S),
        "CSV with one 200 MB line (run)": ("9", [_slimline(), "run", "--profile", str(work / "fast.yaml"),
                                                "--checkpoint", str(paths["bert"]), "--out", out, "--no-history",
                                                "--eval-data", str(work / "line.csv")], CASE_TIMEOUT_S),
        "verify --key /dev/zero": ("10", [_slimline(), "verify", str(paths["bundle"]), "--key", "/dev/zero"],
                                   CASE_TIMEOUT_S),
        "verify --key FIFO": ("10", [_slimline(), "verify", str(paths["bundle"]), "--key", str(paths["fifo"])],
                              HANG_TIMEOUT_S),
        "verify forged archive (other key, 300 MB)": ("11", [_slimline(), "verify", str(paths["forged"]), "--key",
                                                             str(paths["public"])], CASE_TIMEOUT_S),
    }


# --- kill -9 and serve -------------------------------------------------------------------------------------------


def _bench_workers(scratch: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(scratch).encode() in (entry / "cmdline").read_bytes() \
                    and b"slimline.benchmarking.worker" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_9_case(paths: dict[str, Path], work: Path, code: Path | None) -> dict[str, Any]:
    scratch = work / "kill-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    out = work / "kill-out"
    shutil.rmtree(out, ignore_errors=True)
    process = subprocess.Popen([_slimline(), "run", "--checkpoint", str(paths["bert"]), "--profile",
                                str(work / "slow.yaml"), "--out", str(out), "--no-history"], cwd=work,
                               env=_env(code, TMPDIR=str(scratch)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + CASE_TIMEOUT_S, []
    while time.monotonic() < deadline and not workers and process.poll() is None:
        workers = _bench_workers(scratch)
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(10)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # this script started them: end them
        os.kill(pid, signal.SIGKILL)
    left = [p.name for p in scratch.iterdir() if p.name.startswith("slimline-bench-")]
    after = timed([_slimline(), "run", "--checkpoint", str(work / "missing"), "--out", str(work / "x"),
                   "--no-history"], work, code, TMPDIR=str(scratch))
    swept = not any((scratch / name).exists() for name in left)
    return {"exit": -9, "wall_s": None, "peak_rss_mb": None,
            "note": f"worker alive 10 s after kill -9: {'yes' if survivors else 'no'}; /tmp/slimline-bench-* left: "
                    f"{len(left)}, removed by the next run: {'yes' if left and swept else 'no'} "
                    f"(next run exit {after['exit']})"}


def serve_case(paths: dict[str, Path], work: Path, code: Path | None) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(work / "serve.log", "w")  # noqa: SIM115 - the server writes to it while it runs
    server = subprocess.Popen([_slimline(), "serve", str(paths["bundle"]), "--host", "127.0.0.1", "--port",
                               str(port)], cwd=work, env=_env(code), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: half")
        time.sleep(15)
        closed = 0
        for client in clients:
            client.setblocking(True)
            client.settimeout(0.2)
            try:
                while client.recv(65536):
                    pass
                closed += 1  # the server closed it (after a 408, or silently)
            except TimeoutError:
                pass  # still open
            except OSError:
                closed += 1  # reset by the server
            client.close()
        still_open = len(clients) - closed
        return {"exit": "-", "wall_s": None, "peak_rss_mb": None,
                "note": f"200 half-header connections, still open after 15 s: {still_open}"}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


GENERATE_PROBE = r"""
import asyncio, json
from types import SimpleNamespace
import httpx
from slimline.serve.app import create_app
m = SimpleNamespace(name="stub", model_version="0" * 12, format="onnx", task="text-generation",
                    runtime=SimpleNamespace(name="onnxruntime"))
app = create_app(SimpleNamespace(manifest=m, providers=[], threads=1, generate=lambda p, n: None))
bodies = {"deep JSON": b'{"prompt": ' + b"[" * 40 + b"]" * 40 + b"}",
          "lone surrogate": b'{"prompt": "a \\ud800 b"}', "not JSON": b'{"prompt": '}
async def go():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        return {k: (await c.post("/v1/generate", content=v)).status_code for k, v in bodies.items()}
print(json.dumps(asyncio.run(go())))
"""


def generate_case(work: Path, code: Path | None) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", GENERATE_PROBE], cwd=work, env=_env(code), capture_output=True,
                          text=True, timeout=300, check=False)
    codes = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else done.stderr[-200:]
    return {"exit": "-", "wall_s": None, "peak_rss_mb": None, "note": f"/v1/generate status: {codes}"}


def render(results: dict[str, Any]) -> str:
    labels = results["labels"]
    header = ["item", "case"] + [f"{label}: {what}" for label in labels for what in ("exit", "wall s", "peak MB")]
    lines = ["# Issue 18 hostile inputs: exit code, wall time, peak RSS", "",
             f"Machine: {results['machine']}. Wall times on a shared 2-core machine under load (see `load`).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for case, item in results["items"].items():
        row = [item, case]
        for label in labels:
            measured = results["cases"].get(label, {}).get(case, {})
            row += [str(measured.get("exit", "")), str(measured.get("wall_s") or ""),
                    str(measured.get("peak_rss_mb") or "")]
            if measured.get("note"):
                notes.append(f"- {case} ({label}): {measured['note']}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, "", *notes, "", f"load: {results.get('load', {})}", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", required=True, help="the column: before, after ...")
    parser.add_argument("--code", type=Path, help="a checkout whose slimline to run (PYTHONPATH); default: installed")
    parser.add_argument("--work", type=Path, help="where the fixtures go (default: a temporary directory)")
    parser.add_argument("--only", help="run only the cases whose name holds this text (the others keep their results)")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="preflight-refusals-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = prepare(work) if not (work / "paths.json").is_file() else \
        {k: Path(v) for k, v in json.loads((work / "paths.json").read_text()).items()}
    (work / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    cases: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        case: (item, lambda argv_case=argv_case, timeout_s=timeout_s: timed(argv_case, work, args.code, timeout_s))
        for case, (item, argv_case, timeout_s) in cli_cases(paths, work).items()}
    cases["kill -9 of run during bench"] = ("13", lambda: kill_9_case(paths, work, args.code))
    cases["serve: 200 half-header connections"] = ("15", lambda: serve_case(paths, work, args.code))
    cases["serve: /v1/generate bad bodies"] = ("15", lambda: generate_case(work, args.code))
    results_path = args.results_dir / f"{NAME}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"labels": [], "cases": {}}
    measured: dict[str, Any] = dict(results["cases"].get(args.label, {})) if args.only else {}
    for case, (_, measure) in cases.items():
        if args.only and args.only not in case:
            continue
        shutil.rmtree(work / "out", ignore_errors=True)
        measured[case] = measure()
        print(case, measured[case], flush=True)
    results["labels"] = [*[label for label in results["labels"] if label != args.label], args.label]
    results["cases"][args.label] = measured
    results["items"] = {case: item for case, (item, _) in cases.items()}
    results["machine"] = f"{os.cpu_count()} CPUs"
    results.setdefault("load", {})[args.label] = os.getloadavg()[0]
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    (args.results_dir / f"{NAME}.md").write_text(render(results))
    print(f"wrote {results_path} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
