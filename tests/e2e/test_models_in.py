"""Models that arrive as an ONNX or TorchScript file, through the installed console script (issue 20).

Before, an ONNX streaming model (a recurrent state whose batch axis is not first, a scalar input) had no way in:
`run`, `bench`, `compress` and `package` all exited 2 until a manifest was written by hand; its .npz eval data
crashed (exit 3, IndexError); and dynamic INT8 quantized 0 of its weight ops, grew the file and exited 0.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, slimline_script
from plain_modules import write_tiny_cnn
from streaming_model import INPUT_SPEC, write_eval_chunks, write_streaming_onnx, write_streaming_torchscript

TENSOR_PROFILE = str(REPO / "tests" / "fixtures" / "fast-cpu-tensor.yaml")
INT8 = "quantize.ort-int8-dynamic"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models-in")
    write_streaming_onnx(root / "stream.onnx")
    write_streaming_torchscript(root / "stream.pt")
    (root / "inputs.yaml").write_text(INPUT_SPEC)
    write_eval_chunks(root / "chunks.npz")
    return root


def cli(work: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=work, env={"SLIMLINE_CACHE_DIR": str(work / "cache")})


def text(done: subprocess.CompletedProcess) -> str:
    return " ".join((done.stdout + done.stderr).split())


@pytest.fixture(scope="module")
def onnx_run(work: Path) -> Path:
    done = cli(work, "run", "--checkpoint", "stream.onnx", "--profile", TENSOR_PROFILE, "--eval-data", "chunks.npz",
               "--out", "run", "--no-history")
    assert done.returncode in (0, 1), text(done)[-3000:]
    assert "fusion: not available for this model" in text(done)  # the optional step said so, on the console
    return work / "run"


def test_an_onnx_streaming_model_reaches_a_verdict_on_the_default_recipe(onnx_run: Path) -> None:
    report = json.loads((onnx_run / "report.json").read_text())
    assert report["verdict"] == "pass", report["budgets"]
    assert report["baseline"]["label"] == "stream.onnx onnxruntime (baseline)"  # the fp32 graph on ONNX Runtime
    assert report["baseline"]["runtime"] == "onnxruntime"
    assert [s["name"] for s in report["stages"]] == [INT8]  # no export: the graph is the model
    from slimline.core.data import split_indices

    test_rows = len(split_indices(24, "test", 0))  # eval data are judged on their seeded test split
    assert report["eval_data"]["examples"] == test_rows and report["eval_data"]["evaluator"] == "agreement"
    assert report["measurements"]["quality"]["agreement_pct"] >= 50
    stage = json.loads((onnx_run.parent / report["stages"][0]["directory"] / "manifest.json").read_text())
    effect = stage["metadata"]["quantization"]["effect"]
    assert effect["quantized_ops"] and effect["size_bytes_after"] <= effect["size_bytes_before"]
    assert [i["shape"] for i in stage["inputs"]] == [["batch", "time", 40], [2, "batch", 64], []]


def test_export_of_an_onnx_file_is_refused_before_any_work_saying_what_takes_it(work: Path) -> None:
    """Was exit 3 after the stage started ("ONNX export takes a Hugging Face model directory", fix: reorder passes);
    found by the coverage matrix (docs/coverage.md)."""
    done = cli(work, "export", "--checkpoint", "stream.onnx", "--out", "exported")
    assert done.returncode == 2, text(done)[-2000:]
    assert "stream.onnx is already an ONNX model: there is nothing to export" in text(done)
    assert "`slimline run`, `slimline bench`" in text(done) and not (work / "exported").exists()


def test_bench_compress_package_and_serve_an_onnx_file(work: Path, onnx_run: Path) -> None:
    done = cli(work, "bench", "--model", "stream.onnx", "--profile", TENSOR_PROFILE, "--out", "bench",
               "--eval-data", "chunks.npz", "--no-history")
    assert done.returncode in (0, 1), text(done)[-2000:]
    compressed = cli(work, "compress", "--model", "stream.onnx", "--recipe", "cpu-int8-dynamic", "--out", "int8")
    assert compressed.returncode == 0, text(compressed)[-2000:]
    assert "note: fusion: not available" in text(compressed)
    manifest = json.loads((work / "int8" / "manifest.json").read_text())
    assert manifest["metadata"]["skipped_steps"][0]["pass"] == "optimize.ort-transformers"
    assert manifest["lineage"][0]["name"] == "onnx-file"
    rebench = cli(work, "bench", "--model", "int8", "--profile", TENSOR_PROFILE, "--out", "bench-int8",
                  "--eval-data", "chunks.npz", "--no-history")  # the baseline: the ONNX file its lineage names
    assert rebench.returncode in (0, 1), text(rebench)[-2000:]
    report = json.loads((work / "bench-int8" / "report.json").read_text())
    assert report["baseline"]["label"] == "stream.onnx onnxruntime (baseline)"
    packaged = cli(work, "package", str(onnx_run), "--out", "bundle")
    assert packaged.returncode == 0, text(packaged)[-2000:]
    assert cli(work, "verify", "bundle").returncode == 0
    config = next((work / "bundle" / "model_repository").glob("*/config.pbtxt")).read_text()
    assert "max_batch_size: 0" in config and "dims: [ 2, -1, 64 ]" in config  # Triton: the batch is not first
    _serve_and_infer(work / "bundle")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_and_infer(bundle: Path) -> None:
    httpx = pytest.importorskip("httpx")
    import onnxruntime as ort

    port = _free_port()
    log = bundle.parent / "serve.log"
    with open(log, "w") as handle:
        process = subprocess.Popen([slimline_script(), "serve", str(bundle), "--port", str(port)], stdout=handle,
                                   stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(360):
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        rng = np.random.default_rng(3)
        feeds = {"chunk": rng.standard_normal((2, 5, 40)).astype(np.float32),
                 "state": np.zeros((2, 2, 64), np.float32), "gain": np.array(0.5, np.float32)}
        answer = httpx.post(f"{url}/v1/infer", json={"inputs": {k: v.tolist() for k, v in feeds.items()}}, timeout=30)
        assert answer.status_code == 200, answer.text
        engine = next((bundle / "model_repository").glob("*/1/model.onnx"))
        expected = ort.InferenceSession(str(engine), providers=["CPUExecutionProvider"]).run(None, feeds)
        outputs = answer.json()["outputs"]
        np.testing.assert_allclose(np.asarray(outputs["logits"]), expected[0], atol=1e-5)
        assert np.asarray(outputs["next_state"]).shape == (2, 2, 64)
        mismatched = {**{k: v.tolist() for k, v in feeds.items()}, "state": np.zeros((2, 3, 64)).tolist()}
        refused = httpx.post(f"{url}/v1/infer", json={"inputs": mismatched}, timeout=30)
        assert refused.status_code == 422 and "axis 'batch' is 3 in inputs.state" in refused.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/predict", json={"texts": ["a"]}).json()["error"]["code"] == "not_a_classifier"
    finally:
        process.send_signal(2)
        assert process.wait(timeout=30) == 0, log.read_text()


def test_quantizing_no_weight_op_fails_with_the_coverage_and_is_skipped_when_optional(work: Path) -> None:
    """Dynamic INT8 told to quantize Gemm, which this model has none of, quantized 0 weight ops and exited 0."""
    (work / "gemm-only.yaml").write_text(f"- pass: {INT8}\n  with: {{op_types: [Gemm]}}\n")
    failed = cli(work, "compress", "--model", "stream.onnx", "--recipe", "gemm-only.yaml", "--out", "noop")
    assert failed.returncode == 3, text(failed)[-2000:]
    assert "quantized 0 of 3 weight ops (the model's weight ops: 1 Conv, 2 MatMul; op_types ['Gemm'])" in text(failed)
    assert not (work / "noop").exists()
    (work / "optional.yaml").write_text(f"- pass: {INT8}\n  optional: true\n  with: {{op_types: [Gemm]}}\n"
                                        f"- pass: {INT8}\n")
    skipped = cli(work, "compress", "--model", "stream.onnx", "--recipe", "optional.yaml", "--out", "second")
    assert skipped.returncode == 0, text(skipped)[-2000:]
    assert f"note: {INT8}: quantized 0 of 3 weight ops" in text(skipped) and "continuing unquantized" in text(skipped)
    [note] = json.loads((work / "second" / "manifest.json").read_text())["metadata"]["skipped_steps"]
    assert note["step"] == 1 and "quantized 0 of 3" in note["reason"]


def test_a_torchscript_module_is_exported_like_a_plain_module_and_reaches_a_verdict(work: Path) -> None:
    done = cli(work, "run", "--checkpoint", "stream.pt", "--inputs", "inputs.yaml", "--profile", TENSOR_PROFILE,
               "--eval-data", "chunks.npz", "--out", "ts-run", "--no-history")
    assert done.returncode in (0, 1), text(done)[-3000:]
    report = json.loads((work / "ts-run" / "report.json").read_text())
    assert report["baseline"]["runtime"] == "torch" and report["baseline"]["size_mb"] > 0.1
    assert [s["name"] for s in report["stages"]] == ["export.onnx", INT8]
    exported = json.loads((work / report["stages"][0]["directory"] / "manifest.json").read_text())
    assert exported["metadata"]["exporter"] == "torch.onnx (torchscript)" and exported["metadata"]["parity"]
    missing = cli(work, "run", "--checkpoint", "stream.pt", "--profile", TENSOR_PROFILE, "--out", "ts-none")
    assert missing.returncode == 2 and "pass --inputs inputs.yaml" in text(missing)


def test_a_training_checkpoint_given_as_weights_is_unwrapped_with_a_note(work: Path) -> None:
    import torch

    plain = write_tiny_cnn(work / "cnn")
    state = torch.load(plain, weights_only=True)
    torch.save({"step": 40, "model_state": {f"module.{k}": v for k, v in state.items()}, "optimizer_state": {}},
               work / "cnn" / "checkpoint.pt")
    done = run_cli("run", "--model-factory", "tiny_cnn:build", "--weights", "checkpoint.pt", "--inputs",
                   "inputs.yaml", "--profile", str(REPO / "tests" / "fixtures" / "fast-cpu.yaml"), "--out", "run",
                   "--no-history", cwd=work / "cnn", env={"SLIMLINE_CACHE_DIR": str(work / "cache")})
    assert done.returncode in (0, 1), text(done)[-3000:]
    assert ("weights taken from the `model_state` entry of a training checkpoint (keys: step, model_state, "
            "optimizer_state); with the `module.` prefix of every key stripped") in text(done)
