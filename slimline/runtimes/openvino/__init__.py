"""OpenVINO on the CPU: an IR built from the ONNX stage (export.openvino) or by an OpenVINO pass (NNCF INT8,
weight compression, the inference precision), run with the target's threads and a latency/throughput hint.

OpenVINO reads standard ONNX, not ONNX Runtime's contrib ops, so ORT-only passes may not precede it; its
own INT8 comes from NNCF (quantize.nncf-int8). Bundles use Triton's openvino backend (model.xml +
model.bin in the version directory), and `slimline serve` runs the same IR through OpenVINOSession.
Installed by `pip install 'slimline[openvino]'` (part of the default install).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import MissingDependency
from slimline.profiles.schema import Target
from slimline.runtimes.base import Decoder, Runner, RunnerSpec, Runtime, RuntimeConfig, Session
from slimline.runtimes.openvino.telemetry import disable_telemetry

disable_telemetry()  # before anything under this package imports openvino or nncf (see telemetry.py)
INSTALL = "pip install 'slimline[openvino]'"


class OpenVINOConfig(RuntimeConfig):
    #: LATENCY: one stream, all threads on one request (what a batch-1 p50 budget wants); THROUGHPUT: streams.
    performance_hint: Literal["latency", "throughput"] = "latency"
    num_streams: int | None = Field(default=None, ge=1)
    #: Overrides the IR's own precision (convert.openvino-precision) and OpenVINO's default; None keeps them.
    inference_precision: Literal["bf16", "f32", "f16"] | None = None
    #: A stateful decoder's KV-cache precision; None keeps OpenVINO's CPU default (u8 where the CPU has
    #: AVX-512, else f16/bf16). Measured on SmolLM2-135M (teacher-forced decode, 24 windows of Rotten Tomatoes
    #: text): u8 +0.04% perplexity vs torch fp32 with bf16 inference, bf16/f16/f32 +0.17%; so the default stays.
    kv_cache_precision: Literal["u8", "f16", "bf16", "f32"] | None = None


class OpenVINO(Runtime):
    name = "openvino"
    module_name = "openvino"
    Config = OpenVINOConfig
    loads = frozenset({"openvino", "onnx"})  # an IR, or a standard ONNX graph read directly
    engine_format = "openvino"
    engine_step = "export.openvino"
    engine_exporter = "slimline.exporters.openvino:ENGINE_EXPORTER"
    onnx_int8_devices = frozenset({"cpu"})  # reads QDQ graphs as INT8
    pruning_timer: ClassVar[Literal["onnx", "torch"] | None] = "onnx"
    triton_platform, triton_backend = None, "openvino"
    engine_file_name = "model.xml"
    engine_suffixes = (".xml", ".bin")
    engine_description = "an OpenVINO IR"

    def check_available(self, target: Target, purpose: str) -> None:
        try:
            import openvino as ov

            devices = ov.Core().available_devices
        except Exception as err:  # ImportError, or a broken install whose plugins do not load
            raise MissingDependency(f"{purpose} runs on OpenVINO, which cannot be loaded here ({err}).",
                                    fix=INSTALL) from err
        if "CPU" not in devices:
            raise MissingDependency(f"{purpose} runs on OpenVINO's CPU plugin, but OpenVINO finds only {devices}.",
                                    fix=f"reinstall OpenVINO: pip install --force-reinstall {INSTALL[12:]}")

    def installed_version(self) -> str:
        """The release ("2026.4.1"), not ov.__version__'s build string ("2026.4.1-22982-e213a147257-releases/...")."""
        import importlib.metadata

        self.check_available(Target(runtime=self.name), "loading an OpenVINO bundle")
        return importlib.metadata.version("openvino")

    def make_runner(self, spec: RunnerSpec) -> Runner:
        from slimline.runtimes.openvino.runner import OpenVINORunner

        return OpenVINORunner(spec)

    def triton_caveat(self, model_metadata: dict[str, Any]) -> str | None:
        """A stateful decoder keeps its KV cache in the infer request; Triton's OpenVINO backend does not reset
        that state per request or per sequence, so one request's cache would leak into the next."""
        if not (model_metadata.get("openvino") or {}).get("stateful"):
            return None
        return ("this engine is a stateful OpenVINO decoder (its KV cache lives in the infer request), and "
                "Triton's OpenVINO backend does not reset that state between requests: serve it with `slimline "
                "serve` (which resets it per generation) or OpenVINO Model Server with `stateful: true`; "
                "model_repository/ holds it in Triton's layout only")

    def triton_parameters(self, target: Target) -> dict[str, str]:
        from slimline.runtimes.openvino.session import config_properties

        return config_properties(target.threads, self.config(target))

    def open_session(self, engine: Path, threads: int, target: Target) -> Session:
        from slimline.runtimes.openvino.session import OpenVINOSession, config_properties

        return OpenVINOSession(engine, config_properties(threads, self.config(target)))

    def make_decoder(self, session: Session, config: dict[str, Any]) -> Decoder | None:
        """A stateful IR decodes with its cache in the infer request; an IR with past inputs, as ONNX Runtime does."""
        if getattr(session, "stateful", False):
            from slimline.runtimes.openvino.decoder import StatefulDecoder

            return StatefulDecoder(session)  # type: ignore[arg-type]
        return super().make_decoder(session, config)

    def engine_outputs(self, engine: Path, model: ModelDir) -> list[TensorSpec]:
        from slimline.runtimes.openvino.ir import openvino
        from slimline.runtimes.openvino.session import port_specs

        ov_model = openvino("reading an OpenVINO IR").Core().read_model(str(engine))
        return [TensorSpec(name=port.name, dtype=port.dtype, shape=port.shape) for port in port_specs(ov_model.outputs)]


RUNTIME = OpenVINO()
