"""The ASGI app: POST /v1/predict, GET /health, GET /metrics.

Requests are validated by hand rather than by FastAPI's body parsing so every rejection has one JSON
shape, `{"error": {"code", "message"}}`, a status that says who is at fault, and a metric: 400 bad JSON,
413 too large (body, number of texts, text length), 422 wrong fields or types, 500 a failed model run.
A rejected or failed request never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from slimline.serve.batching import MicroBatcher
from slimline.serve.metrics import ServeMetrics
from slimline.serve.predictor import Prediction, Predictor

log = logging.getLogger(__name__)
ENDPOINTS = ("/v1/predict", "/health", "/metrics")
JSON_ESCAPE_FACTOR = 6  # worst case bytes per character in a JSON string ("\u0001")


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_texts: int = Field(default=64, ge=1, description="texts per request")
    max_text_chars: int = Field(default=10_000, ge=1, description="characters per text")
    workers: int = Field(default=1, ge=1, description="model runs in parallel (threads)")
    micro_batch_max_texts: int = Field(default=0, ge=0, description="0: no micro-batching")
    micro_batch_delay_ms: float = Field(default=2.0, ge=0, le=1000)

    @property
    def max_body_bytes(self) -> int:
        return self.max_texts * (self.max_text_chars * JSON_ESCAPE_FACTOR + 8) + 1024


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _read_body(request: Request, limit: int) -> bytes:
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


def _validation_message(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts) + ' (expected {"texts": ["...", ...]})'


def parse_predict_request(body: bytes, settings: ServeSettings) -> list[str]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {err}") from err
    try:
        texts = PredictRequest.model_validate(payload).texts
    except ValidationError as err:
        raise ApiError(422, "invalid_request", _validation_message(err)) from err
    if len(texts) > settings.max_texts:
        raise ApiError(413, "too_many_texts", f"{len(texts)} texts in one request; the limit is {settings.max_texts}")
    longest = max(len(text) for text in texts)
    if longest > settings.max_text_chars:
        raise ApiError(413, "text_too_long",
                       f"a text of {longest} characters; the limit is {settings.max_text_chars}")
    return texts


def _error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    request.state.error_reason = code
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
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
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
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
        return _error_response(request, err.status, err.code, err.message)

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        started = time.perf_counter()
        texts = parse_predict_request(await _read_body(request, settings.max_body_bytes), settings)
        try:
            if batcher is not None:
                predictions = await batcher.submit(texts)
            else:
                predictions = await asyncio.get_running_loop().run_in_executor(executor, run_batch, texts)
        except Exception as err:  # a failed run answers 500 for this request; the server keeps serving
            log.exception("prediction failed")
            raise ApiError(500, "inference_failed", f"the model run failed: {type(err).__name__}: {err}") from err
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
