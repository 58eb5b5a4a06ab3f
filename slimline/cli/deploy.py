"""The deployment commands of `slimline`: package, verify, serve. Registered by slimline.cli.main.build_parser.

Kept apart so the deployment surface (and its lazy FastAPI/uvicorn imports) lives in one place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimline import api
from slimline.cli.console import console as _console
from slimline.core.errors import EXIT_OK, BadInputError


def cmd_package(args: argparse.Namespace) -> int:
    bundle = api.package(args.source, out=args.out, name=args.name, profile=args.profile, force=args.force,
                         tar=args.tar)
    manifest = bundle.manifest
    console = _console()
    console.print(f"bundle: {bundle.path} ({manifest.name}, {manifest.format}, model version "
                  f"{manifest.model_version}, {len(manifest.files)} files, "
                  f"{'verdict ' + manifest.verdict if manifest.verdict else 'not benchmarked'})")
    if bundle.archive:
        console.print(f"archive: {bundle.archive}")
    console.print(f"manifest sha256: {bundle.manifest_sha256}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    result = api.verify(args.bundle)
    console = _console()
    console.print(f"[bold green]OK[/] {result.bundle}: {result.name} ({result.format}, model version "
                  f"{result.model_version}), {result.files_checked} files match their sha256; loads with "
                  f"{result.runtime} {result.local_runtime_version} (packaged with {result.recorded_runtime_version})")
    console.print(f"manifest sha256: {result.manifest_sha256}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from slimline.core.deps import require

    for module in ("fastapi", "uvicorn", "prometheus_client"):  # before the modules that import them
        require(module, purpose="`slimline serve`")
    from slimline.serve.app import ServeSettings
    from slimline.serve.server import ServeRequest, serve

    try:
        settings = ServeSettings(max_texts=args.max_texts, max_text_chars=args.max_text_chars, workers=args.workers,
                                 micro_batch_max_texts=args.micro_batch, micro_batch_delay_ms=args.batch_delay_ms)
    except ValidationError as err:
        item = err.errors()[0]
        raise BadInputError(f"serve option {item['loc'][0]}: {item['msg']}.",
                            fix="see `slimline serve --help`.") from err
    console = _console()

    def ready(url: str, facts: dict[str, Any]) -> None:
        batching = f"micro-batching up to {args.micro_batch} texts" if args.micro_batch else "no micro-batching"
        console.print(f"serving {facts['name']} (model version {facts['model_version']}) at {url} "
                      f"[{facts['threads']} threads, {batching}]", markup=False)
        console.print("endpoints: POST /v1/predict, GET /health, GET /metrics; Ctrl-C or SIGTERM stops it")
        for warning in facts.get("warnings") or []:
            console.print(f"warning: {warning}", markup=False)
        console.file.flush()

    serve(ServeRequest(bundle=Path(args.bundle), host=args.host, port=args.port, threads=args.threads,
                       settings=settings, access_log=args.access_log,
                       log_level="info" if args.verbose else "warning"), on_ready=ready)
    console.print("server stopped")
    return EXIT_OK


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    package = sub.add_parser("package", help="build a verified deployment bundle (engine, tokenizer, manifest, "
                             "report, model card, Triton layout)")
    package.add_argument("source", metavar="RUN_OR_MODEL_DIR",
                         help="a `slimline run` directory (final model + report) or an exported model directory")
    package.add_argument("--out", required=True, help="bundle directory to write")
    package.add_argument("--name", help="model name (Triton model directory; default: from the checkpoint)")
    package.add_argument("--profile", help="profile for the Triton config and serving (default: the run's, or cpu)")
    package.add_argument("--tar", action="store_true", help="also write BUNDLE.tar.gz")
    package.add_argument("--force", action="store_true", help="replace an existing --out")
    package.set_defaults(handler=cmd_package)

    verify = sub.add_parser("verify", help="check a bundle's hashes, format and that this machine can load it")
    verify.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.gz")
    verify.set_defaults(handler=cmd_verify)

    serve = sub.add_parser("serve", help="serve a bundle over HTTP: /v1/predict, /health, /metrics")
    serve.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.gz")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port; default 8000)")
    serve.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the bundle's profile)")
    serve.add_argument("--workers", type=int, default=1, help="model runs in parallel (default 1)")
    serve.add_argument("--micro-batch", type=int, default=0, metavar="N",
                       help="merge concurrent requests into runs of up to N texts (default 0: off)")
    serve.add_argument("--batch-delay-ms", type=float, default=2.0, help="longest wait to fill a micro-batch")
    serve.add_argument("--max-texts", type=int, default=64, help="texts per request (more: 413)")
    serve.add_argument("--max-text-chars", type=int, default=10_000, help="characters per text (more: 413)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=cmd_serve)
