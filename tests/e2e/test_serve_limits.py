"""`slimline serve`'s connection limits on a real uvicorn server (127.0.0.1 only), and /v1/generate's error codes.

200 loopback connections that each sent half a header were never closed (uvicorn has no header timeout),
and /v1/generate answered 422 where the README promises 400 (deep JSON, lone surrogates). The server
here is uvicorn with slimline's config (serve.server.uvicorn_config) in a thread, over a small app, so
the limits are tested without a model; every socket has a timeout, so a regression fails, never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

HALF_A_HEADER = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"
FULL_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def small_app(scope: dict, receive: Any, send: Any) -> None:
    """/health answers at once, /slow after 2 s (longer than the tests' header deadline)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2.0)
    body = b'{"status": "ok"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_server(header_timeout_s: float, max_connections: int) -> Iterator[tuple[str, int]]:
    import uvicorn

    from slimline.serve.app import ServeSettings
    from slimline.serve.server import ServeRequest, bind, uvicorn_config

    settings = ServeSettings(header_timeout_s=header_timeout_s, max_connections=max_connections)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(small_app, ServeRequest(bundle=Path("unused"), settings=settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _connect(address: tuple[str, int]) -> socket.socket:
    client = socket.create_connection(address, timeout=10)
    client.settimeout(10)
    return client


def _read_until_closed(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def _one_response(client: socket.socket) -> bytes:
    """One whole response (head and content-length body) off a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += client.recv(65536)
    return head + b"\r\n\r\n" + body  # the body read after the head arrived included


def _status_and_body(data: bytes) -> tuple[int, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_connections_that_send_half_a_header_are_answered_408_and_closed() -> None:
    with running_server(header_timeout_s=1.0, max_connections=512) as address:
        clients = [_connect(address) for _ in range(200)]
        for client in clients:
            client.sendall(HALF_A_HEADER)
        started = time.monotonic()
        answers = [_read_until_closed(client) for client in clients]  # each recv times out after 10 s otherwise
        assert time.monotonic() - started < 15
        for answer in answers:
            status, body = _status_and_body(answer)
            assert status == 408 and body["error"]["code"] == "header_timeout"
        for client in clients:
            client.close()
        assert httpx.get(f"http://{address[0]}:{address[1]}/health", timeout=10).status_code == 200


def test_a_silent_connection_is_closed_after_the_header_deadline() -> None:
    with running_server(header_timeout_s=1.0, max_connections=512) as address:
        client = _connect(address)
        assert _read_until_closed(client) == b""  # closed without a word: nothing was asked


def test_a_keep_alive_connection_gets_a_new_deadline_for_its_next_request() -> None:
    with running_server(header_timeout_s=1.0, max_connections=512) as address:
        client = _connect(address)
        client.sendall(FULL_REQUEST)
        assert _one_response(client).startswith(b"HTTP/1.1 200")
        client.sendall(HALF_A_HEADER)  # data cancels uvicorn's keep-alive timer: the header deadline must not
        status, body = _status_and_body(_read_until_closed(client))
        assert status == 408 and body["error"]["code"] == "header_timeout"


def test_slow_but_complete_headers_and_slow_answers_are_not_cut() -> None:
    with running_server(header_timeout_s=1.0, max_connections=512) as address:
        client = _connect(address)
        for piece in (b"GET /slow HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            client.sendall(piece)
            time.sleep(0.3)  # 0.9 s in all: inside the deadline
        answer = _one_response(client)  # the app takes 2 s, twice the header deadline
        assert answer.startswith(b"HTTP/1.1 200") and b'"ok"' in answer


def test_connections_beyond_the_cap_are_answered_503_and_closed_at_once() -> None:
    with running_server(header_timeout_s=30.0, max_connections=50) as address:
        held = [_connect(address) for _ in range(50)]
        time.sleep(0.5)  # let the server accept them all
        extra = [_connect(address) for _ in range(10)]
        started = time.monotonic()
        for client in extra:
            status, body = _status_and_body(_read_until_closed(client))
            assert status == 503 and body["error"]["code"] == "too_many_connections"
        assert time.monotonic() - started < 10
        for client in held:
            client.close()
        time.sleep(0.5)
        assert httpx.get(f"http://{address[0]}:{address[1]}/health", timeout=10).status_code == 200


# --- /v1/generate answers as /v1/predict does --------------------------------------------------------------------


def _stub_generator() -> SimpleNamespace:
    """What create_app reads of a Generator; `generate` is never reached by a rejected request."""
    manifest = SimpleNamespace(name="stub-lm", model_version="0" * 12, format="onnx", task="text-generation",
                               runtime=SimpleNamespace(name="onnxruntime"))

    def generate(prompt: str, max_new_tokens: int) -> SimpleNamespace:
        return SimpleNamespace(text=" more", finish_reason="length", prompt_tokens=2, new_tokens=1, prefill_ms=1.0,
                               decode_tokens_per_s=10.0)

    return SimpleNamespace(manifest=manifest, providers=["CPUExecutionProvider"], threads=1, generate=generate)


def _post_generate(bodies: list[bytes]) -> list[Any]:
    from slimline.serve.app import create_app

    app = create_app(_stub_generator())  # type: ignore[arg-type]

    async def exchange() -> list[Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://local") as client:
            return [await client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
                    for body in bodies]

    return asyncio.run(exchange())


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'{"prompt": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "too_deep"),
    (b'{"prompt": "lone \\ud800 surrogate"}', 400, "bad_unicode"),
    (b'{"prompt": "raw \xed\xa0\x80 bytes"}', 400, "bad_unicode"),  # json.loads: surrogatepass
    (b'{"prompt": "unterminated', 400, "bad_json"),
    (b'{"prompt": 3}', 422, "invalid_request"),
    (b'{"prompt": "ok", "max_new_tokens": 0}', 422, "invalid_request"),
    (b'["prompt"]', 422, "invalid_request"),
])
def test_generate_refuses_bad_bodies_with_the_same_codes_as_predict(body: bytes, status: int, code: str) -> None:
    [response] = _post_generate([body])
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert set(response.json()) == {"error"}


def test_generate_still_answers_a_good_prompt() -> None:
    [response] = _post_generate([b'{"prompt": "the film", "max_new_tokens": 1}'])
    assert response.status_code == 200 and response.json()["text"] == " more"
