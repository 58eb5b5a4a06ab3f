"""The ASGI app: POST /v1/predict (classifiers), /v1/generate (causal LMs) or /v1/infer (raw tensors: any other
ONNX bundle, e.g. a model that arrived as an ONNX or TorchScript file), GET /health, GET /metrics.

Requests are validated by hand rather than by FastAPI's body parsing so every rejection has one JSON
shape, `{"error": {"code", "message"}}`, a status that says who is at fault, and a metric: 400 bad JSON
(also nested too deep, or text that is not valid Unicode), 401 a missing or wrong bearer token, 408 a
body that did not arrive in time, 413 too large (body, number of texts, text length), 422 wrong fields
or types, 499 (logged, never seen) a client that hung up, 500 a failed model run or a server bug.
Client input never gets a 5xx: the fuzz test in tests/e2e/test_serve_fuzz.py holds the server to that.
A rejected or failed request never stops the server and is answered on a connection that stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictStr, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from slimline.serve.batching import MicroBatcher
from slimline.serve.generator import Generator
from slimline.serve.metrics import ServeMetrics
from slimline.serve.predictor import Prediction, Predictor
from slimline.serve.tensors import TensorInputError, TensorModel

log = logging.getLogger(__name__)
ENDPOINTS = ("/v1/predict", "/v1/generate", "/v1/infer", "/health", "/metrics")
OPEN_ENDPOINTS = ("/health",)  # answered without a token: load balancers probe it
JSON_ESCAPE_FACTOR = 6  # worst case bytes per character in a JSON string ("\u0001")
MAX_JSON_DEPTH = 32  # a request needs 2 ({"texts": [...]}); json.loads recurses per level, RecursionError at ~1000
MAX_LISTED_PROBLEMS = 3  # a 600,000-item list of ints must not come back as 600,000 messages
CLIENT_GONE = 499  # nginx's code for "client closed the request": in metrics only, the client never sees it
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
PREDICT_SHAPE = '{"texts": ["...", ...]}'
GENERATE_SHAPE = '{"prompt": "...", "max_new_tokens": 64}'


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_texts: int = Field(default=64, ge=1, description="texts per request")
    max_text_chars: int = Field(default=10_000, ge=1, description="characters per text")
    workers: int = Field(default=1, ge=1, description="model runs in parallel (threads)")
    micro_batch_max_texts: int = Field(default=0, ge=0, description="0: no micro-batching")
    micro_batch_delay_ms: float = Field(default=2.0, ge=0, le=1000)
    read_timeout_s: float = Field(default=10.0, gt=0, le=3600, description="for a whole request body to arrive")
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600, description="for a request's headers to arrive "
                                    "(on connecting, and after each response on a keep-alive connection)")
    max_connections: int = Field(default=512, ge=1, le=65_536, description="open connections; more get a 503")
    auth_token: SecretStr | None = Field(default=None, description="bearer token every endpoint but /health needs")

    @property
    def max_body_bytes(self) -> int:
        return self.max_texts * (self.max_text_chars * JSON_ESCAPE_FACTOR + 8) + 1024


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1)


class GenerateRequest(BaseModel):
    """POST /v1/generate (causal-LM bundles): greedy continuation of one prompt."""

    model_config = ConfigDict(extra="forbid")
    prompt: StrictStr
    max_new_tokens: int = Field(default=64, ge=1, le=1024)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


async def _read_body_unbounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """uvicorn waits as long as it takes for a body to reach its Content-Length, so a client that sends
    less (or a slow-drip one) would hold the request, and a worker's memory, forever."""
    try:
        return await asyncio.wait_for(_read_body_unbounded(request, limit), timeout_s)
    except asyncio.TimeoutError as err:
        raise ApiError(408, "read_timeout", f"the request body did not arrive within {timeout_s:g} s; send as many "
                       "bytes as Content-Length says", headers={"connection": "close"}) from err
    except ClientDisconnect as err:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s hung up before sending the whole request body", client)
        raise ApiError(CLIENT_GONE, "client_disconnected", "the client hung up") from err


def json_nesting_depth(body: bytes) -> int:
    """The deepest `[`/`{` nesting outside strings, checked before json.loads: its C scanner recurses once
    per level and raises RecursionError (then a plain-text 500) near 1,000 levels. Assumes an ASCII-compatible
    encoding; a UTF-16 body may be miscounted, so json.loads' RecursionError is still caught."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), np.int8(1), np.int8(-1))
    return max(0, int(np.cumsum(steps, dtype=np.int64).max()))  # "]]]" is bad JSON, not negative depth


def _validation_message(err: ValidationError) -> str:
    problems = err.errors()
    parts = []
    for item in problems[:MAX_LISTED_PROBLEMS]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    if len(problems) > MAX_LISTED_PROBLEMS:
        parts.append(f"{len(problems) - MAX_LISTED_PROBLEMS} more")
    return "; ".join(parts)


def _check_unicode(texts: list[str], field: str = "texts") -> None:
    """JSON can spell a lone surrogate ("\\ud800"), which Python decodes into a str no encoder accepts: the
    tokenizer then raised a TypeError and the client got a 500. Such a text is the client's error."""
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            where = f"{field}[{index}]" if field == "texts" else field
            raise ApiError(400, "bad_unicode", f"{where} is not valid Unicode: a lone surrogate "
                           f"(\\u{ord(text[err.start]):04x}) at character {err.start}; send UTF-8 text, "
                           "with \\ud8xx escapes only in high-low pairs") from None


def parse_json_body(body: bytes, expected: str) -> object:
    """The body as JSON, every way it can fail to be JSON a 400 (the same for /v1/predict and /v1/generate):
    nested too deep (checked before parsing), not JSON, not UTF-8. `expected` shows the request's shape."""
    depth = json_nesting_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, "too_deep", f"the body nests {depth} levels of arrays/objects; the limit is "
                       f"{MAX_JSON_DEPTH} (expected {expected})")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {err}") from err
    except RecursionError as err:
        raise ApiError(400, "too_deep", f"the body nests arrays/objects too deep; the limit is {MAX_JSON_DEPTH}"
                       ) from err


def parse_predict_request(body: bytes, settings: ServeSettings) -> list[str]:
    payload = parse_json_body(body, PREDICT_SHAPE)
    listed = payload.get("texts") if isinstance(payload, dict) else None
    if isinstance(listed, list) and len(listed) > settings.max_texts:  # before validating every item
        raise ApiError(413, "too_many_texts", f"{len(listed)} texts in one request; the limit is {settings.max_texts}")
    try:
        texts = PredictRequest.model_validate(payload).texts
    except ValidationError as err:
        raise ApiError(422, "invalid_request", f"{_validation_message(err)} (expected {PREDICT_SHAPE})") from err
    longest = max(len(text) for text in texts)
    if longest > settings.max_text_chars:
        raise ApiError(413, "text_too_long",
                       f"a text of {longest} characters; the limit is {settings.max_text_chars}")
    _check_unicode(texts)
    return texts


def parse_generate_request(body: bytes) -> GenerateRequest:
    """/v1/generate's body, refused as /v1/predict's is: 400 for what is not JSON (too deep, not UTF-8), 422
    for wrong fields. (Pydantic's own JSON parser answered 422 for deep nesting and lone surrogates.)"""
    payload = parse_json_body(body, GENERATE_SHAPE)
    try:
        return GenerateRequest.model_validate(payload)
    except ValidationError as err:
        raise ApiError(422, "invalid_request", f"{_validation_message(err)} (expected {GENERATE_SHAPE})") from err


def _error_response(request: Request, status: int, code: str, message: str,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    request.state.error_reason = code
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _authorized(request: Request, token: SecretStr) -> bool:
    """Compares bytes, in constant time: compare_digest refuses a str with non-ASCII characters (TypeError,
    a 500), and Starlette decodes header bytes as latin-1, so encoding back gives what the client sent."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("latin-1"), token.get_secret_value().encode("utf-8"))


def create_app(predictor: Predictor | Generator | TensorModel, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    manifest = predictor.manifest
    metrics = ServeMetrics(model_name=manifest.name, model_version=manifest.model_version,
                           model_format=manifest.format, runtime=manifest.runtime.name)
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="slimline-infer")
    batcher: MicroBatcher | None = None

    def run_batch(texts: list[str]) -> list[Prediction]:
        started = time.perf_counter()
        predictions = predictor.predict(texts)
        if batcher is None:
            metrics.observe_batch(len(texts), time.perf_counter() - started)
        return predictions

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal batcher
        if settings.micro_batch_max_texts > 0:
            batcher = MicroBatcher(run_batch, executor, settings.micro_batch_max_texts,
                                   settings.micro_batch_delay_ms / 1000, on_batch=metrics.observe_batch)
            batcher.start()
        try:
            yield
        finally:  # uvicorn has stopped accepting and let in-flight requests finish
            if batcher is not None:
                await batcher.stop()
            executor.shutdown(wait=True)

    app = FastAPI(title=f"slimline serve: {manifest.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.metrics = metrics

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Counts every answer, and turns an exception no handler took into a JSON 500 here: Starlette's own
        last resort answers plain text, re-raises (uvicorn logs a traceback and drops the connection) and
        runs outside this middleware, so the request went uncounted."""
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            if settings.auth_token is not None and endpoint not in OPEN_ENDPOINTS \
                    and not _authorized(request, settings.auth_token):
                response = _error_response(request, 401, "unauthorized", "this server needs an `Authorization: "
                                           "Bearer <token>` header with the token from its --token-file",
                                           headers={"www-authenticate": "Bearer"})
            else:
                response = await call_next(request)
        except Exception as err:  # a server bug; one line, the traceback only at DEBUG
            log.error("%s %s failed: %s: %s", request.method, endpoint, type(err).__name__, err,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            response = _error_response(request, 500, "internal_error",
                                       "the server failed on this request; its log says why")
        finally:
            metrics.in_flight.dec()
        code = response.status_code
        metrics.requests.labels(endpoint, str(code)).inc()
        if code >= 400:
            metrics.errors.labels(endpoint, getattr(request.state, "error_reason", f"http_{code}")).inc()
        if endpoint != "/metrics":
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error_response(request, err.status, err.code, err.message, err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        """Starlette's 404 and 405 in the server's one error shape (FastAPI's would be `{"detail": ...}`)."""
        return _error_response(request, err.status_code, f"http_{err.status_code}", str(err.detail), err.headers)

    def endpoint_of(model: object) -> str:
        return "/v1/generate" if hasattr(model, "generate") else "/v1/infer" if hasattr(model, "infer") \
            else "/v1/predict"

    @app.post("/v1/infer")
    async def infer(request: Request) -> JSONResponse:
        if not isinstance(predictor, TensorModel):
            raise ApiError(404, "not_a_tensor_model", f"{manifest.name} is a {manifest.task} model: POST "
                           f"{endpoint_of(predictor)}")
        started = time.perf_counter()
        body = await _read_body(request, settings.max_body_bytes, settings.read_timeout_s)
        payload = parse_json_body(body, '{"inputs": {"<input name>": [...], ...}}')
        try:
            feeds = predictor.feeds(payload)
            outputs = await asyncio.get_running_loop().run_in_executor(executor, predictor.infer, feeds)
        except TensorInputError as err:
            raise ApiError(422, "invalid_request", str(err)) from err
        except Exception as err:  # a failed run answers 500 for this request; the server keeps serving
            log.error("inference failed: %s: %s", type(err).__name__, err, exc_info=log.isEnabledFor(logging.DEBUG))
            raise ApiError(500, "inference_failed", f"the model run failed ({type(err).__name__}); the server's "
                           "log says why") from err
        return JSONResponse({"outputs": outputs, "model": manifest.name, "model_version": manifest.model_version,
                             "latency_ms": round((time.perf_counter() - started) * 1000, 3)})

    @app.post("/v1/generate")
    async def generate(request: Request) -> JSONResponse:
        if not hasattr(predictor, "generate"):
            raise ApiError(404, "not_a_generator", f"{manifest.name} is a {manifest.task} model: POST "
                           f"{endpoint_of(predictor)}")
        body = await _read_body(request, settings.max_body_bytes, settings.read_timeout_s)
        payload = parse_generate_request(body)
        if len(payload.prompt) > settings.max_text_chars:
            raise ApiError(413, "text_too_long", f"a prompt of {len(payload.prompt)} characters; the limit is "
                           f"{settings.max_text_chars}")
        _check_unicode([payload.prompt], "prompt")
        run = predictor.generate  # type: ignore[union-attr]
        try:
            result = await asyncio.get_running_loop().run_in_executor(executor, run, payload.prompt,
                                                                      payload.max_new_tokens)
        except ValueError as err:  # the prompt does not fit the model's context
            raise ApiError(413, "prompt_too_long", str(err)) from err
        return JSONResponse({"text": result.text, "finish_reason": result.finish_reason,
                             "prompt_tokens": result.prompt_tokens, "new_tokens": result.new_tokens,
                             "prefill_ms": round(result.prefill_ms, 3),
                             "decode_tokens_per_s": round(result.decode_tokens_per_s, 2),
                             "model": manifest.name, "model_version": manifest.model_version})

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        if not hasattr(predictor, "predict"):
            raise ApiError(404, "not_a_classifier", f"{manifest.name} is a {manifest.task} model: POST "
                           f"{endpoint_of(predictor)}")
        started = time.perf_counter()
        body = await _read_body(request, settings.max_body_bytes, settings.read_timeout_s)
        texts = parse_predict_request(body, settings)
        try:
            if batcher is not None:
                predictions = await batcher.submit(texts)
            else:
                predictions = await asyncio.get_running_loop().run_in_executor(executor, run_batch, texts)
        except Exception as err:  # a failed run answers 500 for this request; the server keeps serving
            log.error("prediction of %d texts failed: %s: %s", len(texts), type(err).__name__, err,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            raise ApiError(500, "inference_failed", f"the model run failed ({type(err).__name__}); the server's "
                           "log says why") from err
        return JSONResponse({
            "predictions": [{"label": p.label, "score": p.score} for p in predictions],
            "model": manifest.name,
            "model_version": manifest.model_version,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        })

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {"status": "ok", "model": manifest.name, "model_version": manifest.model_version,
                "format": manifest.format, "providers": predictor.providers,
                "micro_batching": settings.micro_batch_max_texts > 0}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    return app
