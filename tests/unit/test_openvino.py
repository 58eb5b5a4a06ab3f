"""OpenVINO on tiny models: the IR export, each OpenVINO pass, the runner, and bundle + verify + serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimline.compression.base import ModelInfo, PassContext
from slimline.compression.catalogue import registry
from slimline.compression.convert.openvino_precision import choose_precision
from slimline.compression.recipe import parse_recipe
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.pipeline.single import compress_to, export_to
from slimline.pipeline.stages import engine_producer, run_stage
from slimline.profiles.schema import Measurement, Profile, Shape, Target, load_profile
from slimline.runtimes import get_runtime, make_runner
from slimline.runtimes.base import RunnerSpec

pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'slimline[openvino]'")
pytest.importorskip("nncf", reason="the openvino extra is not installed: pip install 'slimline[openvino]'")

OPENVINO = Target(device="cpu", runtime="openvino", threads=1)
ORT = Target(device="cpu", runtime="onnxruntime", threads=1)
QUICK = Measurement(warmup_iters=1, min_iters=5, min_time_s=0.0, max_time_s=5.0, decode_tokens=6)
FEEDS = {"input_ids": np.arange(5, 21, dtype=np.int64).reshape(2, 8), "attention_mask": np.ones((2, 8), np.int64),
         "token_type_ids": np.zeros((2, 8), np.int64)}


def make(name: str, **options):
    return registry()[name](registry()[name].Config(**options))


def openvino_profile(**budgets: dict) -> Profile:
    return Profile(name="test-openvino", target=OPENVINO, shapes=[Shape(batch_size=1, sequence_length=16)],
                   measurement=QUICK, budgets=budgets or {"size_mb": {"max": 100}})


def runner(model: ModelDir, runtime: str = "openvino", task: str = "text-classification",
           options: dict | None = None):
    return make_runner(RunnerSpec(label=runtime, runtime=runtime, model_path=str(model.model_path),
                                  model_dir=str(model.path), model_format=model.manifest.format, task=task, threads=1,
                                  inputs=model.manifest.inputs, shapes=[Shape(batch_size=1, sequence_length=8)],
                                  measurement=QUICK, runtime_options=options or {}))


@pytest.fixture(scope="module")
def tiny_onnx(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return export_to(tiny_bert, tmp_path_factory.mktemp("onnx") / "model")


@pytest.fixture(scope="module")
def tiny_ir(tiny_onnx: ModelDir, tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    runtime = get_runtime("openvino")
    exporter = runtime.exporter()
    config = exporter.config(OPENVINO)
    model, _ = run_stage(tmp_path_factory.mktemp("ir"), 1, "exporter", exporter.step, config.model_dump(), tiny_onnx,
                         engine_producer(tiny_onnx, exporter, config, [Shape()], "openvino"))
    return model


@pytest.fixture(scope="module")
def int8_ir(tiny_onnx: ModelDir, labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    steps = parse_recipe([{"pass": "quantize.nncf-int8", "with": {"calibration": {
        "source": str(labelled_csv), "num_samples": 40, "min_samples": 8}}}], "test")
    return compress_to(tiny_onnx.path, tmp_path_factory.mktemp("int8") / "out", steps,
                       openvino_profile(accuracy_drop_pt={"max": 100}),
                       tuning_data=DatasetSpec(source=str(labelled_csv)))


def test_the_ir_export_keeps_the_onnx_models_outputs(tiny_onnx: ModelDir, tiny_ir: ModelDir) -> None:
    assert tiny_ir.manifest.format == "openvino" and tiny_ir.manifest.model_file == "model.xml"
    assert {"model.xml", "model.bin", "config.json", "tokenizer.json"} <= set(tiny_ir.manifest.files)
    assert tiny_ir.manifest.metadata["openvino"]["compress_to_fp16"] is True
    ours = runner(tiny_ir, options={"inference_precision": "f32"}).run(FEEDS)
    theirs = runner(tiny_onnx, "onnxruntime").run(FEEDS)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)  # fp16-stored weights, f32 compute


def test_the_runner_reads_standard_onnx_too_and_reports_what_it_compiled(tiny_onnx: ModelDir) -> None:
    ov_runner = runner(tiny_onnx, options={"performance_hint": "throughput", "inference_precision": "f32"})
    assert ov_runner.run(FEEDS).shape == (2, 2)
    described = ov_runner.describe()
    assert described["runtime"] == "openvino" and described["performance_hint"] == "THROUGHPUT"
    assert described["inference_precision"] == "f32" and described["threads"] == 1


def test_nncf_int8_writes_fake_quantize_ops_and_records_its_calibration_set(int8_ir: ModelDir) -> None:
    import openvino as ov

    assert int8_ir.manifest.format == "openvino"
    ops = {op.get_type_name() for op in ov.Core().read_model(str(int8_ir.model_path)).get_ops()}
    assert "FakeQuantize" in ops
    quantization = int8_ir.manifest.metadata["quantization"]
    assert quantization["scheme"] == "nncf-int8" and quantization["calibration"]["examples"] == 40
    assert int8_ir.manifest.provenance.data_sha256["calibration"]
    control = int8_ir.manifest.metadata["accuracy_control"]
    assert control["quantized_with_accuracy_control"] is False and control["budget_pt"] == 100
    assert runner(int8_ir).run(FEEDS).shape == (2, 2)


def test_nncf_int8_over_budget_falls_back_to_accuracy_controlled_quantization(
        tiny_onnx: ModelDir, labelled_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain INT8 measured 30 points below the reference: the pass must hand over to NNCF's accuracy control."""
    from slimline.compression.quantize import openvino_common

    real = openvino_common.Validation.accuracy_pct
    calls: list[dict] = []

    def accuracy_pct(self, ov_model, properties):
        calls.append(properties)
        value = real(self, ov_model, properties)
        return value - 30.0 if len(calls) == 2 else value  # the second call scores the plain INT8 model

    monkeypatch.setattr(openvino_common.Validation, "accuracy_pct", accuracy_pct)
    quantizer = make("quantize.nncf-int8", calibration={"source": str(labelled_csv), "num_samples": 20,
                                                         "min_samples": 8}, validation_samples=10)
    context = PassContext(target=OPENVINO, shape=Shape(sequence_length=16), accuracy_drop_budget_pt=1.0,
                          tuning_data=DatasetSpec(source=str(labelled_csv)))
    out = tmp_path / "out"
    out.mkdir()
    result = quantizer.apply(tiny_onnx, out, context)
    control = result.metadata["accuracy_control"]
    assert control["quantized_with_accuracy_control"] is True and control["int8_drop_pt"] >= 29
    assert "controlled_drop_pt" in control and (out / "model.xml").is_file()


def test_openvino_passes_refuse_a_runtime_that_cannot_load_an_ir() -> None:
    info = ModelInfo("onnx", "text-classification", "bert")
    for name in ("quantize.nncf-int8", "convert.openvino-precision", "quantize.nncf-weight-compression"):
        problems = make(name).check(info, ORT)
        assert any(p.severity == "error" and "cannot load" in p.message for p in problems), name
        assert not [p for p in make(name).check(info, OPENVINO) if p.severity == "error" and "IR" in p.message]


def test_onnx_runtime_only_passes_refuse_an_openvino_target() -> None:
    info = ModelInfo("onnx", "text-classification", "bert")
    for name in ("optimize.ort-transformers", "quantize.ort-int8-dynamic", "quantize.ort-int4-weight-only"):
        assert any(p.severity == "error" for p in make(name).check(info, OPENVINO)), name
    assert not [p for p in make("quantize.ort-int8-static").check(info, OPENVINO) if p.severity == "error"]


@pytest.mark.parametrize(("capabilities", "expected"), [
    ({"amx_bf16": True, "avx512_bf16": True}, "bf16"),
    ({"amx_bf16": False, "avx512_bf16": True}, "bf16"),
    ({"amx_bf16": False, "avx512_bf16": False}, "f32"),
])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(capabilities: dict, expected: str) -> None:
    precision, why = choose_precision("auto", capabilities)
    assert precision == expected and why
    assert choose_precision("f32", capabilities)[0] == "f32"


def test_the_precision_pass_records_its_choice_and_the_runner_compiles_with_it(tiny_ir: ModelDir,
                                                                               tmp_path: Path) -> None:
    model = compress_to(tiny_ir.path, tmp_path / "out", parse_recipe(
        [{"pass": "convert.openvino-precision", "with": {"precision": "f32"}}], "test"), openvino_profile())
    facts = model.manifest.metadata["openvino"]
    assert facts["inference_precision"] == "f32" and facts["runtime_options"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert runner(model).describe()["inference_precision"] == "f32"
    overridden = runner(model, options={"inference_precision": "bf16"}).describe()
    assert overridden["requested"]["INFERENCE_PRECISION_HINT"] == "bf16"


def test_weight_compression_shrinks_a_decoder_that_still_decodes(tiny_llama: Path, tmp_path: Path) -> None:
    from slimline.benchmarking.decode import decode_results

    onnx = export_to(tiny_llama, tmp_path / "onnx")
    compressed = compress_to(onnx.path, tmp_path / "int8", parse_recipe(
        [{"pass": "quantize.nncf-weight-compression", "with": {"mode": "int8_asym"}}], "test"),
        load_profile("llm-cpu-openvino"))
    assert compressed.manifest.metadata["quantization"]["scheme"] == "nncf-weights-int8_asym"
    assert compressed.size_mb() < 0.6 * onnx.size_mb()
    config = json.loads((tiny_llama / "config.json").read_text())
    decode = decode_results(runner(compressed, task="text-generation"), config,
                            [Shape(batch_size=1, sequence_length=10)], QUICK, seed=0)
    assert decode["b1_s10"]["new_tokens"] == 6 and decode["b1_s10"]["decode_tokens_per_s"] > 0


def test_an_openvino_bundle_verifies_declares_the_openvino_backend_and_serves(int8_ir: ModelDir,
                                                                              tmp_path: Path) -> None:
    from slimline.deploy.bundle import package
    from slimline.deploy.manifest import read_manifest, verify_bundle
    from slimline.serve.predictor import Predictor

    bundle = package(int8_ir.path, tmp_path / "bundle", profile=openvino_profile())
    root = Path(bundle.path)
    assert bundle.manifest.format == "openvino" and bundle.manifest.runtime.name == "openvino"
    version_dir = root / "model_repository" / bundle.manifest.name / "1"
    assert {p.name for p in version_dir.iterdir()} == {"model.xml", "model.bin"}
    config = (root / bundle.manifest.triton_config).read_text()
    assert 'backend: "openvino"' in config and "platform:" not in config and '"INFERENCE_NUM_THREADS"' in config
    assert verify_bundle(root).runtime == "openvino"
    predictions = Predictor(root, read_manifest(root)).predict(["hello world", "the film"])
    assert len(predictions) == 2 and all(0.0 <= p.score <= 1.0 for p in predictions)


def test_the_preflight_says_what_amx_offers_and_warns_when_f32_leaves_it_unused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.compression.convert import openvino_precision

    amx = {"kind": "amx", "vnni": True, "bf16": True, "amx": True, "amx_int8": True, "amx_bf16": True,
           "avx512_bf16": True}
    notes = get_runtime("onnxruntime").preflight_notes(ORT, amx)
    assert notes and "AMX" in notes[0] and "cpu-openvino" in notes[0]
    assert get_runtime("onnxruntime").preflight_notes(ORT, {**amx, "amx": False}) == []
    monkeypatch.setattr(openvino_precision, "cpu_capabilities", lambda: amx)
    info = ModelInfo("openvino", "text-classification", "bert")
    warned = make("convert.openvino-precision", precision="f32").check(info, OPENVINO)
    assert any(p.severity == "warning" and "AMX" in p.message for p in warned)
    assert not make("convert.openvino-precision").check(info, OPENVINO)


def test_int4_weight_compression_adjusts_a_group_the_layer_width_does_not_divide(tiny_onnx: ModelDir,
                                                                                 tmp_path: Path) -> None:
    """The tiny BERT's layers are 32 wide: a group of 128 cannot divide them (SmolLM2's 576 cannot take 128)."""
    from slimline.core.errors import PassError

    def compress(fallback: str) -> ModelDir:
        return compress_to(tiny_onnx.path, tmp_path / fallback, parse_recipe([{
            "pass": "quantize.nncf-weight-compression",
            "with": {"mode": "int4_sym", "group_size": 128, "group_size_fallback": fallback}}], "test"),
            openvino_profile())

    with pytest.raises(PassError, match="group"):
        compress("error")
    adjusted = compress("adjust")
    assert adjusted.manifest.format == "openvino" and runner(adjusted).run(FEEDS).shape == (2, 2)


def test_openvino_and_nncf_telemetry_is_never_sent(tiny_onnx: ModelDir, tmp_path: Path) -> None:
    """openvino-telemetry sends from a forked process that hangs a run at exit where there is no network."""
    import subprocess
    import sys

    code = (
        "import multiprocessing, sys\n"
        "started = []\n"
        "multiprocessing.Process.start = lambda self: started.append(self)\n"
        "import slimline.runtimes.openvino\n"
        "import nncf, openvino as ov\n"
        "from openvino_telemetry import main\n"
        f"ov.convert_model({str(tiny_onnx.model_path)!r})\n"
        "main.Telemetry().send_event('c', 'a', 'l', force_send=True)\n"
        "print(main.Telemetry().consent, len(started))\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                               env={**__import__("os").environ, "HOME": str(home)}, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["False", "0"]
    assert not any(home.rglob("*")), "no client id or consent file is written"
