"""Prometheus metrics of one server: a registry per app (not the process-global one), so two apps in one
process (tests) never clash over metric names."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self, *, model_name: str, model_version: str, model_format: str, runtime: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("slimline_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "code"], registry=self.registry)
        self.errors = Counter("slimline_request_errors", "Requests answered with an error, by endpoint and reason.",
                              ["endpoint", "reason"], registry=self.registry)
        self.latency = Histogram("slimline_request_latency_seconds", "Time from request received to response, "
                                 "by endpoint.", ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_size = Histogram("slimline_batch_size", "Texts per model run (micro-batches merge requests).",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram("slimline_inference_seconds", "Tokenisation + model run time per batch.",
                                   buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.texts = Counter("slimline_predicted_texts", "Texts classified.", registry=self.registry)
        self.in_flight = Gauge("slimline_requests_in_flight", "Requests being handled now.", registry=self.registry)
        self.model = Info("slimline_model", "The served bundle.", registry=self.registry)
        self.model.info({"name": model_name, "version": model_version, "format": model_format, "runtime": runtime})

    def observe_batch(self, texts: int, seconds: float) -> None:
        self.batch_size.observe(texts)
        self.inference.observe(seconds)
        self.texts.inc(texts)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
