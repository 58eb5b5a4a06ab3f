"""`slimline serve` end to end: the real console script on a free localhost port, answering real requests.

One server (no micro-batching, a 2 s read timeout) is shared by the module and stopped with SIGINT by the
last test that uses it; the micro-batching, non-loopback and token tests start their own. All must exit 0
after a clean shutdown. Client input that must never get a 5xx is fuzzed in test_serve_fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_tiny_bert, run_cli, slimline_script

httpx = pytest.importorskip("httpx")

STARTUP_TIMEOUT_S = 90
READ_TIMEOUT_S = 2  # the shared server's --read-timeout-s
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


def raw_exchange(sock: socket.socket, request: bytes, timeout_s: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One request on a socket the test controls: keep-alive reuse, short bodies and lone surrogates (which
    httpx cannot encode) need bytes on the wire exactly as written."""
    sock.settimeout(timeout_s)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def post_bytes(body: bytes, *, extra_headers: bytes = b"") -> bytes:
    return (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" + extra_headers
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def metric(url: str, line_start: str) -> float:
    """The value of the first /metrics sample that starts with `line_start`, 0 when absent."""
    text = httpx.get(f"{url}/metrics").text
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)), 0.0)


def build_bundle(root: Path) -> Path:
    from slimline.deploy.bundle import package
    from slimline.pipeline.single import export_to

    checkpoint = make_tiny_bert(root / "model", seed=0, initializer_range=0.2)  # predictions that vary by text
    exported = export_to(checkpoint, root / "onnx")
    return Path(package(exported.path, root / "bundle", name="tiny-bert").path)


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
    return build_bundle(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def expected(bundle: Path) -> list[tuple[str, float]]:
    """The engine run directly in this process, one text at a time."""
    from slimline.deploy.manifest import read_manifest
    from slimline.serve.predictor import Predictor

    predictor = Predictor(bundle, read_manifest(bundle), threads=1)
    return [(p.label, p.score) for text in TEXTS for p in predictor.predict([text])]


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("log") / "serve.log"
    running = start_server(bundle, log, "--read-timeout-s", str(READ_TIMEOUT_S))
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
    # a lone surrogate reached the tokenizer, whose TypeError came back as a 500
    "lone surrogate": ({"content": b'{"texts": ["fine", "bad \\ud800 text"]}'}, 400, "bad_unicode"),
    "low surrogate first": ({"content": b'{"texts": ["\\udc00\\ud800"]}'}, 400, "bad_unicode"),
    # json.loads' RecursionError escaped every handler: a plain-text 500
    "nested 100,000 deep": ({"content": b"[" * 100_000 + b"]" * 100_000}, 400, "too_deep"),
    "nested inside texts": ({"content": b'{"texts": ' + b"[" * 50 + b'"a"' + b"]" * 50 + b"}"}, 400, "too_deep"),
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


def test_a_surrogate_pair_is_valid_text_and_gets_predictions(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        status, _, body = raw_exchange(sock, post_bytes(json.dumps({"texts": ["good \U0001f600"]}).encode()))
    assert status == 200 and len(json.loads(body)["predictions"]) == 1


def test_a_rejected_request_is_counted_and_its_keep_alive_connection_stays_usable(server: Server) -> None:
    """The 100,000-deep body used to drop the connection and go uncounted."""
    before = {reason: metric(server.url, f'slimline_request_errors_total{{endpoint="/v1/predict",reason="{reason}"}}')
              for reason in ("too_deep", "bad_unicode")}
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        for body, code in ((b"[" * 100_000 + b"]" * 100_000, "too_deep"), (b'{"texts": ["\\ud800"]}', "bad_unicode")):
            status, headers, answer = raw_exchange(sock, post_bytes(body))
            assert (status, headers["content-type"]) == (400, "application/json"), answer
            assert json.loads(answer)["error"]["code"] == code
        status, _, answer = raw_exchange(sock, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status == 200 and json.loads(answer)["status"] == "ok"
    for reason, count in before.items():
        assert metric(server.url, f'slimline_request_errors_total{{endpoint="/v1/predict",reason="{reason}"}}') \
            == count + 1
    assert 'code="500"' not in httpx.get(f"{server.url}/metrics").text


def test_a_body_shorter_than_its_content_length_gets_a_408_within_the_read_timeout(server: Server) -> None:
    """uvicorn waited for the 90 missing bytes forever."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789")
        status, headers, answer = raw_exchange(sock, b"", timeout_s=READ_TIMEOUT_S + 10)
        waited_s = time.monotonic() - started
        assert status == 408 and json.loads(answer)["error"]["code"] == "read_timeout"
        assert READ_TIMEOUT_S - 0.5 < waited_s < READ_TIMEOUT_S + 5
        assert headers["connection"] == "close" and sock.recv(1024) == b"", "a half-read request cannot keep alive"
    assert metric(server.url, 'slimline_request_errors_total{endpoint="/v1/predict",reason="read_timeout"}') >= 1


def test_a_client_that_hangs_up_is_counted_and_logs_no_traceback(server: Server) -> None:
    """A hang-up mid-body raised ClientDisconnect out of the app: an ERROR traceback per disconnect."""
    line = 'slimline_request_errors_total{endpoint="/v1/predict",reason="client_disconnected"}'
    before = metric(server.url, line)
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"texts\"")
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while metric(server.url, line) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server.url, line) == before + 1
    assert "Traceback" not in server.output() and "ERROR" not in server.output(), server.output()


def test_unknown_paths_and_methods_get_the_servers_json_error_shape(server: Server) -> None:
    missing = httpx.get(f"{server.url}/v2/predict")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "http_404"
    wrong_method = httpx.get(f"{server.url}/v1/predict")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "http_405"
    assert wrong_method.headers["allow"] == "POST"


def test_sigint_stops_the_server_cleanly(server: Server) -> None:
    assert stop(server, signal.SIGINT) == 0, server.output()
    assert "server stopped" in server.output()
    assert "Traceback" not in server.output(), "client input made the server log a traceback"


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


async def _in_process_post(app: object, body: dict) -> tuple[httpx.Response, str]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://local") as client:
        response = await client.post("/v1/predict", json=body)
        return response, (await client.get("/metrics")).text


def test_an_unexpected_server_error_is_a_counted_json_500_logged_on_one_line(
        bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An exception no handler took was a plain-text 500, re-raised to uvicorn (traceback, dropped connection)
    and not counted. ASGITransport re-raises what escapes the app, so this also proves nothing escapes."""
    from slimline.deploy.manifest import read_manifest
    from slimline.serve import app as app_module
    from slimline.serve.predictor import Predictor

    def broken(body: bytes, settings: object) -> list[str]:
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(app_module, "parse_predict_request", broken)
    app = app_module.create_app(Predictor(bundle, read_manifest(bundle), threads=1))
    with caplog.at_level(logging.INFO, logger="slimline.serve"):
        response, metrics = asyncio.run(_in_process_post(app, {"texts": ["good"]}))
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert 'slimline_request_errors_total{endpoint="/v1/predict",reason="internal_error"} 1.0' in metrics
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RuntimeError: a bug in the server" in record.getMessage() and not record.exc_info


def test_a_failed_model_run_is_a_json_500_that_does_not_echo_the_exception(bundle: Path) -> None:
    from slimline.deploy.manifest import read_manifest
    from slimline.serve.app import create_app
    from slimline.serve.predictor import Predictor

    predictor = Predictor(bundle, read_manifest(bundle), threads=1)

    def fail(texts: list[str]) -> list:
        raise TypeError("internal detail /opt/secret/path")

    predictor.predict = fail  # type: ignore[method-assign]
    response, metrics = asyncio.run(_in_process_post(create_app(predictor), {"texts": ["good"]}))
    assert response.status_code == 500 and response.json()["error"]["code"] == "inference_failed"
    assert "/opt/secret" not in response.text and "TypeError" in response.text
    assert 'reason="inference_failed"} 1.0' in metrics


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                                ("localhost", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False),
                                                ("::", False), ("10.1.2.3", False), ("example.com", False)])
def test_only_loopback_addresses_count_as_private(host: str, loopback: bool) -> None:
    from slimline.serve.app import ServeSettings
    from slimline.serve.server import exposure_warnings, is_loopback

    assert is_loopback(host) is loopback
    assert bool(exposure_warnings(host, ServeSettings())) is not loopback


def test_binding_beyond_loopback_warns_that_there_is_no_authentication(bundle: Path, tmp_path: Path) -> None:
    running = start_server(bundle, tmp_path / "serve.log", "--host", "0.0.0.0")  # the test connects to 127.0.0.1
    try:
        assert "with no authentication" in running.output() and "--token-file" in running.output()
        assert stop(running, signal.SIGTERM) == 0, running.output()
    finally:
        if running.process.poll() is None:
            running.process.kill()


def test_a_token_file_guards_every_endpoint_but_health(bundle: Path, tmp_path: Path) -> None:
    token = "s3cret-token_value"
    (tmp_path / "token").write_text(f"  {token}\n")
    running = start_server(bundle, tmp_path / "serve.log", "--host", "0.0.0.0", "--token-file", str(tmp_path / "token"))
    good = {"authorization": f"Bearer {token}"}
    try:
        assert "no authentication" not in running.output() and "unencrypted" in running.output()
        assert httpx.get(f"{running.url}/health").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {token}"},
                        {"authorization": b"Bearer \xff\xfe"}, {"authorization": f"Bearer {token}x"}):
            response = httpx.post(f"{running.url}/v1/predict", json={"texts": ["good"]}, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{running.url}/metrics").status_code == 401
        assert httpx.post(f"{running.url}/v1/predict", json={"texts": ["good"]}, headers=good).status_code == 200
        assert httpx.post(f"{running.url}/v1/predict", json={"texts": ["good"]},
                          headers={"authorization": f"bearer  {token}"}).status_code == 200
        metrics = httpx.get(f"{running.url}/metrics", headers=good)
        assert 'slimline_request_errors_total{endpoint="/v1/predict",reason="unauthorized"} 5.0' in metrics.text
        assert stop(running, signal.SIGTERM) == 0, running.output()
        assert "Traceback" not in running.output()
    finally:
        if running.process.poll() is None:
            running.process.kill()


@pytest.mark.parametrize("content", ["", " \n\t", None])
def test_an_empty_or_unreadable_token_file_is_refused_with_exit_2(bundle: Path, tmp_path: Path,
                                                                 content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([slimline_script(), "serve", str(bundle), "--port", "0", "--token-file", str(path)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--token-file" in result.stdout + result.stderr
    assert ("is empty: every request" if content is not None else "does not exist") in result.stdout + result.stderr


def test_serve_requires_a_signature_when_asked(bundle: Path, tmp_path: Path) -> None:
    from slimline.deploy.bundle import package

    keys = run_cli("keygen", "--out", str(tmp_path / "publisher"))
    assert keys.returncode == 0, keys.stderr
    public = tmp_path / "publisher.pub"
    refused = run_cli("serve", str(bundle), "--port", "0", "--require-signature", str(public), timeout_s=120)
    assert refused.returncode == 2 and "is not signed" in " ".join(refused.stderr.split())
    onnx = bundle.parent / "onnx"
    signed = Path(package(onnx, tmp_path / "signed", name="tiny-bert", sign_key=tmp_path / "publisher.key").path)
    server = start_server(signed, tmp_path / "signed.log", "--require-signature", str(public))
    try:
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        assert stop(server, signal.SIGTERM) == 0


@pytest.mark.parametrize(("option", "value"), [("--port", "70000"), ("--port", "-1"), ("--threads", "0"),
                                               ("--workers", "0")])
def test_out_of_range_serve_options_are_usage_errors(bundle: Path, option: str, value: str) -> None:
    completed = run_cli("serve", str(bundle), option, value)
    assert completed.returncode == 2 and f"argument {option}" in completed.stderr
