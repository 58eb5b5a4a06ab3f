"""The deployment commands of `slimline`: package, verify, keygen, serve. Registered by slimline.cli.main.build_parser.

Kept apart so the deployment surface (and its lazy FastAPI/uvicorn imports) lives in one place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimline import api
from slimline.cli.arguments import bounded_int
from slimline.cli.console import add_json_option, print_json
from slimline.cli.console import console as _console
from slimline.core.errors import EXIT_OK, BadInputError


def cmd_package(args: argparse.Namespace) -> int:
    bundle = api.package(args.source, out=args.out, name=args.name, profile=args.profile, force=args.force,
                         tar=args.tar, sign_key=args.sign)
    manifest = bundle.manifest
    console = _console()
    console.print(f"bundle: {bundle.path} ({manifest.name}, {manifest.format}, model version "
                  f"{manifest.model_version}, {len(manifest.files)} files, "
                  f"{'verdict ' + manifest.verdict if manifest.verdict else 'not benchmarked'})")
    if bundle.archive:
        console.print(f"archive: {bundle.archive}")
    console.print(f"manifest sha256: {bundle.manifest_sha256}")
    if bundle.signature_key_sha256:
        console.print(f"signed by key sha256: {bundle.signature_key_sha256}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    result = api.verify(args.bundle, key=args.key, expect_sha256=args.expect_sha256)
    if args.json:
        print_json("verify", ok=True, **result.model_dump(mode="json"))
        return EXIT_OK
    console = _console()
    console.print(f"[bold green]OK[/] {result.bundle}: {result.name} ({result.format}, model version "
                  f"{result.model_version}), {result.files_checked} files match their sha256; loads with "
                  f"{result.runtime} {result.local_runtime_version} (packaged with {result.recorded_runtime_version})")
    console.print(f"manifest sha256: {result.manifest_sha256}")
    if args.expect_sha256:
        console.print("manifest sha256 matches the expected digest")
    if result.signature_key_sha256:
        console.print(f"signature valid, key sha256: {result.signature_key_sha256}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from slimline.deploy.signing import generate_keypair, key_fingerprint, load_public_key

    private_path, public_path = generate_keypair(args.out)  # as typed: a trailing / names a directory
    console = _console()
    console.print(f"private key: {private_path} (mode 0600; keep it secret, sign with `slimline package --sign`)",
                  markup=False)
    console.print(f"public key: {public_path} (give it to those who verify: `slimline verify --key`)", markup=False)
    console.print(f"key sha256: {key_fingerprint(load_public_key(public_path))}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from slimline.core.deps import require

    for module in ("fastapi", "uvicorn", "prometheus_client"):  # before the modules that import them
        require(module, purpose="`slimline serve`")
    from slimline.serve.app import ServeSettings
    from slimline.serve.server import ServeRequest, read_token_file, serve

    token = read_token_file(Path(args.token_file)) if args.token_file else None
    try:
        settings = ServeSettings(max_texts=args.max_texts, max_text_chars=args.max_text_chars, workers=args.workers,
                                 micro_batch_max_texts=args.micro_batch, micro_batch_delay_ms=args.batch_delay_ms,
                                 read_timeout_s=args.read_timeout_s, header_timeout_s=args.header_timeout_s,
                                 max_connections=args.max_connections, auth_token=token)
    except ValidationError as err:
        item = err.errors()[0]
        raise BadInputError(f"serve option {item['loc'][0]}: {item['msg']}.",
                            fix="see `slimline serve --help`.") from err
    console = _console()

    def ready(url: str, facts: dict[str, Any]) -> None:
        batching = f"micro-batching up to {args.micro_batch} texts" if args.micro_batch else "no micro-batching"
        console.print(f"serving {facts['name']} (model version {facts['model_version']}) at {url} "
                      f"[{facts['threads']} threads, {batching}]", markup=False)
        console.print(f"endpoints: POST {facts.get('endpoint', '/v1/predict')}, GET /health, GET /metrics; "
                      "Ctrl-C or SIGTERM stops it", markup=False)
        for warning in facts.get("warnings") or []:
            console.print(f"warning: {warning}", markup=False)
        console.file.flush()

    serve(ServeRequest(bundle=Path(args.bundle), host=args.host, port=args.port, threads=args.threads,
                       settings=settings, access_log=args.access_log, log_level="info" if args.verbose else "warning",
                       public_key=Path(args.require_signature) if args.require_signature else None),
          on_ready=ready)
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
    package.add_argument("--force", action="store_true", help="with --tar, replace BUNDLE.tar.gz even when slimline "
                         "did not write it (a bundle directory holds nothing else: --out must be new, empty or a "
                         "bundle; slimline's own is replaced without --force)")
    package.add_argument("--sign", metavar="KEY",
                         help="sign manifest.json with this Ed25519 PEM private key (`slimline keygen`)")
    package.set_defaults(handler=cmd_package)

    verify = sub.add_parser("verify", help="check a bundle's hashes, format and that this machine can load it")
    verify.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.gz")
    verify.add_argument("--key", metavar="PUB",
                        help="require a valid signature by this Ed25519 PEM public key (the publisher's .pub)")
    verify.add_argument("--expect-sha256", metavar="DIGEST",
                        help="require manifest.json's sha256 to be DIGEST (as `slimline package` printed it)")
    add_json_option(verify)
    verify.set_defaults(handler=cmd_verify)

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (PREFIX.key, PREFIX.pub)")
    keygen.add_argument("--out", required=True, metavar="PREFIX",
                        help="writes PREFIX.key (private, mode 0600) and PREFIX.pub; never overwrites")
    keygen.set_defaults(handler=cmd_keygen)

    serve = sub.add_parser("serve", help="serve a bundle over HTTP: /v1/predict (text classifiers), /v1/generate "
                           "(causal LMs) or /v1/infer (raw tensors), /health, /metrics")
    serve.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar.gz")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    serve.add_argument("--port", type=bounded_int(0, 65535), default=8000,
                       help="port (0: any free port; default 8000)")
    serve.add_argument("--threads", type=bounded_int(1, 512),
                       help="ONNX Runtime threads (default: the bundle's profile)")
    serve.add_argument("--workers", type=bounded_int(1, 64), default=1, help="model runs in parallel (default 1)")
    serve.add_argument("--require-signature", metavar="PUB",
                       help="serve only a bundle signed by this public key (from `slimline keygen`)")
    serve.add_argument("--micro-batch", type=int, default=0, metavar="N",
                       help="merge concurrent requests into runs of up to N texts (default 0: off)")
    serve.add_argument("--batch-delay-ms", type=float, default=2.0, help="longest wait to fill a micro-batch")
    serve.add_argument("--max-texts", type=int, default=64, help="texts per request (more: 413)")
    serve.add_argument("--max-text-chars", type=int, default=10_000, help="characters per text (more: 413)")
    serve.add_argument("--read-timeout-s", type=float, default=10.0,
                       help="longest wait for a request body to arrive in full (then 408; default 10)")
    serve.add_argument("--header-timeout-s", type=float, default=10.0,
                       help="longest wait for a request's headers (then 408 and the connection closes; default 10)")
    serve.add_argument("--max-connections", type=int, default=512,
                       help="open connections at most; one more is answered 503 and closed (default 512)")
    serve.add_argument("--token-file", metavar="FILE",
                       help="require `Authorization: Bearer <token>` on every endpoint but /health; the token is "
                            "FILE's text, stripped (set it when binding beyond localhost)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=cmd_serve)
