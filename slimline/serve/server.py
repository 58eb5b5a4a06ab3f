"""Run the app under uvicorn: verify the bundle, load it, bind, serve until SIGTERM/SIGINT, shut down cleanly.

Everything that can fail on bad input (a tampered bundle, a missing runtime, a port in use) fails
before the server starts, with a SlimlineError. The socket is bound here, not by uvicorn, so `--port 0`
works and the address printed is the one actually served.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.core.deps import require
from slimline.core.errors import BadInputError
from slimline.deploy.manifest import BundleManifest, bundle_directory, read_manifest, verify_directory
from slimline.serve.app import ServeSettings, create_app

GRACEFUL_SHUTDOWN_S = 10
LISTEN_BACKLOG = 2048


@dataclass(frozen=True)
class ServeRequest:
    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None
    settings: ServeSettings = field(default_factory=ServeSettings)
    access_log: bool = False
    log_level: str = "warning"


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


def serve(request: ServeRequest, on_ready: Callable[[str, dict[str, Any]], None] | None = None) -> None:
    """Blocks until the server is stopped. `on_ready(url, facts)` runs once the model is loaded and bound."""
    uvicorn = require("uvicorn", purpose="`slimline serve`")
    require("fastapi", purpose="`slimline serve`")
    from slimline.serve.predictor import Predictor

    with bundle_directory(request.bundle) as root:
        verified = verify_directory(root)
        manifest = read_manifest(root)
        predictor = Predictor(root, manifest, threads=request.threads)
        app = create_app(predictor, request.settings)
        sock = bind(request.host, request.port)
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        config = uvicorn.Config(app, log_level=request.log_level, access_log=request.access_log, lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False)
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(url, {"name": verified.name, "model_version": verified.model_version,
                           "providers": predictor.providers, "threads": predictor.threads,
                           "warnings": [*verified.warnings, *batching_warnings(manifest, request.settings)]})
        try:
            with _stop_signals_exit_cleanly():
                server.run(sockets=[sock])
        finally:
            sock.close()
