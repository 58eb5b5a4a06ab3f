"""Run the app under uvicorn: verify the bundle, load it, bind, serve until SIGTERM/SIGINT, shut down cleanly.

Everything that can fail on bad input (a tampered bundle, a missing runtime, a port in use) fails
before the server starts, with a SlimlineError. The socket is bound here, not by uvicorn, so `--port 0`
works and the address printed is the one actually served.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.core.deps import require
from slimline.core.errors import BadInputError
from slimline.core.small_files import read_small_file
from slimline.deploy.manifest import BundleManifest, bundle_directory, verified_manifest
from slimline.serve.app import ServeSettings, create_app
from slimline.serve.connections import guarded_protocol

GRACEFUL_SHUTDOWN_S = 10
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this; uvicorn's default, stated on purpose
LISTEN_BACKLOG = 2048
MAX_TOKEN_FILE_BYTES = 4096  # a token, not a file to slurp whole (/dev/zero, a FIFO: core.small_files)


@dataclass(frozen=True)
class ServeRequest:
    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None
    settings: ServeSettings = field(default_factory=ServeSettings)
    access_log: bool = False
    log_level: str = "warning"
    #: `--require-signature PUB`: serve only a bundle signed by this Ed25519 public key.
    public_key: Path | None = None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # Nagle + delayed ACKs add ~40 ms to every keep-alive response uvicorn writes in two parts.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        why = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err.strerror})"
        raise BadInputError(f"address {host}:{port} {why}.",
                            fix="pick another --port (or --port 0 for any free one).") from err
    sock.listen(LISTEN_BACKLOG)  # connections made before uvicorn starts accepting wait instead of failing
    return sock


def read_token_file(path: Path) -> str:
    """The bearer token for --token-file: the file's text, stripped. A file rather than an option so the
    token stays out of `ps` output and shell history."""
    fix = ("point --token-file at a readable UTF-8 file holding only the token, e.g. one written by "
           "`python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE`.")
    raw = read_small_file(path, max_bytes=MAX_TOKEN_FILE_BYTES, what="--token-file", fix=fix)
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise BadInputError(f"--token-file {path} is not UTF-8 text ({err.reason}).", fix=fix) from err
    if not token:
        raise BadInputError(f"--token-file {path} is empty: every request would need an empty token.",
                            fix="write a token into it, e.g. `python -c 'import secrets; "
                                "print(secrets.token_urlsafe(32))' > FILE`.")
    if any(not 0x21 <= ord(char) <= 0x7E for char in token):
        raise BadInputError(f"--token-file {path} holds whitespace or non-ASCII characters inside the token, which "
                            "HTTP clients cannot send reliably in an Authorization header.",
                            fix="use printable ASCII only, e.g. `secrets.token_urlsafe(32)`.")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a name: it may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def exposure_warnings(host: str, settings: ServeSettings) -> list[str]:
    """Anyone who can reach a non-loopback address can use the model and read /metrics."""
    if is_loopback(host):
        return []
    if settings.auth_token is None:
        return [f"listening on {host}, reachable from other machines, with no authentication: anyone who can "
                "connect can run the model; pass --token-file FILE to require a bearer token, or bind "
                "--host 127.0.0.1"]
    return [f"listening on {host} over plain HTTP: the bearer token crosses the network unencrypted; put a TLS "
            "proxy in front for traffic beyond a trusted network"]


@contextlib.contextmanager
def _stop_signals_exit_cleanly() -> Iterator[None]:
    """uvicorn catches SIGTERM/SIGINT, shuts down gracefully, restores the previous handlers and re-raises
    the signal (uvicorn.Server.capture_signals). With no-op handlers in place, a signalled stop ends in
    a normal return (exit 0) instead of a KeyboardInterrupt or death by SIGTERM after a clean shutdown."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def batching_warnings(manifest: BundleManifest, settings: ServeSettings) -> list[str]:
    """Micro-batching runs shapes the bundle was not measured at, and can change answers (see batching.py)."""
    if settings.micro_batch_max_texts <= 0:
        return []
    warnings = []
    measured = sorted({shape.batch_size for shape in manifest.profile.shapes})
    if settings.micro_batch_max_texts > max(measured):
        warnings.append(f"micro-batches of up to {settings.micro_batch_max_texts} texts go beyond the batch sizes "
                        f"the bundle was benchmarked at ({measured}): latency and accuracy there are unmeasured")
    dynamic = [step.name for step in manifest.lineage if "dynamic" in step.name]
    if dynamic:
        warnings.append(f"the engine is dynamically quantized ({', '.join(dynamic)}): a text's scores, and labels "
                        "near a tie, depend on the texts batched with it; serve without --micro-batch for "
                        "answers that match the benchmark")
    return warnings


def uvicorn_config(app: Any, request: ServeRequest) -> Any:
    """uvicorn's settings, with the connection limits it lacks (a header deadline, a connection cap:
    slimline.serve.connections) in its protocol."""
    import uvicorn

    settings = request.settings
    return uvicorn.Config(app, log_level=request.log_level, access_log=request.access_log, lifespan="on",
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, timeout_keep_alive=KEEP_ALIVE_S,
                          server_header=False, http=guarded_protocol(settings.header_timeout_s,
                                                                     settings.max_connections))


def serve(request: ServeRequest, on_ready: Callable[[str, dict[str, Any]], None] | None = None) -> None:
    """Blocks until the server is stopped. `on_ready(url, facts)` runs once the model is loaded and bound."""
    uvicorn = require("uvicorn", purpose="`slimline serve`")
    require("fastapi", purpose="`slimline serve`")
    from slimline.serve.generator import Generator
    from slimline.serve.predictor import Predictor
    from slimline.serve.tensors import TensorModel

    with bundle_directory(request.bundle, key=request.public_key) as root:
        verified, manifest = verified_manifest(root, key=request.public_key)
        kind = {"text-generation": Generator, "text-classification": Predictor}.get(manifest.task, TensorModel)
        predictor = kind(root, manifest, threads=request.threads)
        app = create_app(predictor, request.settings)
        sock = bind(request.host, request.port)
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        config = uvicorn_config(app, request)
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(url, {"name": verified.name, "model_version": verified.model_version,
                           "providers": predictor.providers, "threads": predictor.threads,
                           "endpoint": {Generator: "/v1/generate", Predictor: "/v1/predict"}.get(kind, "/v1/infer"),
                           "warnings": [*verified.warnings, *batching_warnings(manifest, request.settings),
                                        *exposure_warnings(host, request.settings)]})
        try:
            with _stop_signals_exit_cleanly():
                server.run(sockets=[sock])
        finally:
            sock.close()
