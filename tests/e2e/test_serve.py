"""`slimline serve` end to end: the real console script on a free localhost port, answering real requests.

One server (no micro-batching) is shared by the module and stopped with SIGINT by the last test; the
micro-batching test starts its own and stops it with SIGTERM. Both must exit 0 after a clean shutdown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_tiny_bert, slimline_script

httpx = pytest.importorskip("httpx")

STARTUP_TIMEOUT_S = 90
TEXTS = ["the film was good", "boring plot and bad cast", "it never lands", "great fun", "not good", "the ending"]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, log: Path, *extra: str) -> Server:
    port = _free_port()
    handle = open(log, "w")  # noqa: SIM115 - the server writes to it for its whole life
    process = subprocess.Popen([slimline_script(), "serve", str(bundle), "--host", "127.0.0.1",
                                "--port", str(port), *extra], stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, "COLUMNS": "200"})
    handle.close()
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode} before serving:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.kill()
    pytest.fail(f"the server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{server.output()}")


def stop(server: Server, sig: int) -> int:
    server.process.send_signal(sig)
    try:
        return server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        pytest.fail(f"the server did not stop within 30 s of signal {sig}:\n{server.output()}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slimline.deploy.bundle import package
    from slimline.pipeline.single import export_to

    root = tmp_path_factory.mktemp("serve")
    checkpoint = make_tiny_bert(root / "model", seed=0, initializer_range=0.2)  # predictions that vary by text
    exported = export_to(checkpoint, root / "onnx")
    return Path(package(exported.path, root / "bundle", name="tiny-bert").path)


@pytest.fixture(scope="module")
def expected(bundle: Path) -> list[tuple[str, float]]:
    """The engine run directly in this process, one text at a time."""
    from slimline.deploy.manifest import read_manifest
    from slimline.serve.predictor import Predictor

    predictor = Predictor(bundle, read_manifest(bundle), threads=1)
    return [(p.label, p.score) for text in TEXTS for p in predictor.predict([text])]


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(bundle, tmp_path_factory.mktemp("log") / "serve.log")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_health_names_the_model_and_its_version(server: Server, bundle: Path) -> None:
    from slimline.deploy.manifest import read_manifest

    health = httpx.get(f"{server.url}/health").json()
    manifest = read_manifest(bundle)
    assert health["status"] == "ok"
    assert (health["model"], health["model_version"]) == ("tiny-bert", manifest.model_version)


def test_predict_answers_each_text_as_the_engine_does(server: Server, expected: list[tuple[str, float]]) -> None:
    for index, text in enumerate(TEXTS):
        response = httpx.post(f"{server.url}/v1/predict", json={"texts": [text]})
        assert response.status_code == 200, response.text
        body = response.json()
        [prediction] = body["predictions"]
        assert prediction["label"] == expected[index][0]
        assert prediction["score"] == pytest.approx(expected[index][1], abs=1e-5)
        assert body["latency_ms"] > 0 and body["model"] == "tiny-bert"
    batch = httpx.post(f"{server.url}/v1/predict", json={"texts": TEXTS}).json()
    assert [p["label"] for p in batch["predictions"]] == [label for label, _ in expected]
    assert {label for label, _ in expected} == {"neg", "pos"}, "the tiny model should predict both classes"
    assert len({round(score, 6) for _, score in expected}) == len(TEXTS), "a mixed-up answer must be detectable"


BAD_REQUESTS = {
    "bad JSON": ({"content": b'{"texts": ["good"'}, 400, "bad_json"),
    "missing field": ({"json": {"text": ["good"]}}, 422, "invalid_request"),
    "empty list": ({"json": {"texts": []}}, 422, "invalid_request"),
    "not strings": ({"json": {"texts": ["good", 3]}}, 422, "invalid_request"),
    "too many texts": ({"json": {"texts": ["good"] * 65}}, 413, "too_many_texts"),
    "text too long": ({"json": {"texts": ["a" * 10_001]}}, 413, "text_too_long"),
    "body too large": ({"content": b"x" * 5_000_000}, 413, "too_large"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_a_message_and_the_server_keeps_serving(server: Server, name: str) -> None:
    kwargs, status, code = BAD_REQUESTS[name]
    response = httpx.post(f"{server.url}/v1/predict", headers={"content-type": "application/json"}, timeout=30,
                          **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert httpx.post(f"{server.url}/v1/predict", json={"texts": ["good"]}).status_code == 200


def test_metrics_count_requests_errors_latency_and_batch_sizes(server: Server, bundle: Path) -> None:
    from slimline.deploy.manifest import read_manifest

    httpx.post(f"{server.url}/v1/predict", json={"texts": ["good", "bad"]})
    httpx.post(f"{server.url}/v1/predict", content=b"{", headers={"content-type": "application/json"})
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'slimline_requests_total{code="200",endpoint="/v1/predict"}' in text
    assert 'slimline_request_errors_total{endpoint="/v1/predict",reason="bad_json"}' in text
    assert 'slimline_request_latency_seconds_bucket{endpoint="/v1/predict",le="0.005"}' in text
    assert "slimline_request_latency_seconds_count" in text and "slimline_batch_size_bucket" in text
    version = read_manifest(bundle).model_version
    assert f'slimline_model_info{{format="onnx",name="tiny-bert",runtime="onnxruntime",version="{version}"}} 1.0' \
        in text


def test_sigint_stops_the_server_cleanly(server: Server) -> None:
    assert stop(server, signal.SIGINT) == 0, server.output()
    assert "server stopped" in server.output()


async def _concurrent_predictions(url: str, count: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        responses = await asyncio.gather(*[client.post("/v1/predict", json={"texts": [TEXTS[i % len(TEXTS)]]})
                                           for i in range(count)])
        metrics = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    batch_count = next(line for line in metrics.splitlines() if line.startswith("slimline_batch_size_count"))
    return [r.json() for r in responses] + [{"batch_count": float(batch_count.split()[-1])}]


def test_micro_batching_answers_concurrent_requests_and_sigterm_exits_zero(
        bundle: Path, expected: list[tuple[str, float]], tmp_path: Path) -> None:
    running = start_server(bundle, tmp_path / "serve.log", "--micro-batch", "8", "--batch-delay-ms", "20")
    try:
        *bodies, facts = asyncio.run(_concurrent_predictions(running.url, 24))
        assert [b["predictions"][0]["label"] for b in bodies] == [expected[i % len(TEXTS)][0] for i in range(24)]
        for index, body in enumerate(bodies):  # batch-mates' padding moves an fp32 score by float noise only
            assert body["predictions"][0]["score"] == pytest.approx(expected[index % len(TEXTS)][1], abs=1e-4)
        assert facts["batch_count"] < 24, "concurrent requests should have shared model runs"
        assert stop(running, signal.SIGTERM) == 0, running.output()
    finally:
        if running.process.poll() is None:
            running.process.kill()


def test_served_connections_have_nagle_disabled() -> None:
    """A socket made without proto=IPPROTO_TCP kept Nagle on: keep-alive responses waited ~40 ms for an ACK."""
    from slimline.serve.server import bind

    async def accepted_nodelay() -> int:
        sock = bind("127.0.0.1", 0)
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            result.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(result, 5)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
