"""No silent no-op: a quantization output that quantizes no weight op, or is bigger than its input, is refused
with the coverage (issue 20: 0 of 6 weight ops quantized, 1.29 -> 1.80 MB, exit 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.compression.quantize.effect import SIZE_SLACK_BYTES, check_quantization_effect, quantized_weight_ops
from slimline.core.errors import EXIT_STAGE_FAILED, StepNotApplicable

COVERAGE = {"weight_ops": 3, "quantized_weight_ops": 0, "by_type": {"Conv": 1, "MatMul": 2}}


def _save(directory: Path, nodes: list, initializers: list) -> Path:
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=initializers)
    onnx.save(helper.make_model(graph), str(directory / "model.onnx"))
    return directory


def _float_model(directory: Path) -> Path:
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    return _save(directory, [helper.make_node("MatMul", ["x", "w"], ["y"])], [weight])


def _int8_model(directory: Path, padding_bytes: int = 0, qdq: bool = False) -> Path:
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((4, 4), np.int8), "w_q"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    if padding_bytes:
        inits.append(numpy_helper.from_array(np.zeros(padding_bytes // 4, np.float32), "pad"))
    if qdq:
        nodes = [helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"]),
                 helper.make_node("MatMul", ["x", "w"], ["y"])]
    else:
        nodes = [helper.make_node("MatMulInteger", ["x", "w_q"], ["y"])]
    return _save(directory, nodes, inits)


def test_an_output_with_quantized_weights_passes_and_records_what_was_quantized(tmp_path: Path) -> None:
    source, out = _float_model(tmp_path / "in"), _int8_model(tmp_path / "out")
    effect = check_quantization_effect("quantize.x", source, "model.onnx", out, "model.onnx", COVERAGE, ["MatMul"])
    assert effect["quantized_ops"] == {"MatMulInteger": 1}
    assert effect["size_bytes_before"] > 0 and effect["size_bytes_after"] > 0


def test_qdq_weights_behind_dequantize_linear_count_as_quantized(tmp_path: Path) -> None:
    assert quantized_weight_ops(_int8_model(tmp_path / "qdq", qdq=True) / "model.onnx") == \
        {"DequantizeLinear (weights)": 1}


def test_quantizing_nothing_fails_with_the_coverage_in_the_message(tmp_path: Path) -> None:
    source = _float_model(tmp_path / "in")
    out = _float_model(tmp_path / "out")  # what ORT writes when op_types match nothing: the float graph again
    with pytest.raises(StepNotApplicable) as caught:
        check_quantization_effect("quantize.ort-int8-dynamic", source, "model.onnx", out, "model.onnx", COVERAGE,
                                  ["Gemm"])
    message = str(caught.value)
    assert "quantized 0 of 3 weight ops (the model's weight ops: 1 Conv, 2 MatMul; op_types ['Gemm'])" in message
    assert caught.value.exit_code == EXIT_STAGE_FAILED and "optional: true" in (caught.value.fix or "")
    assert caught.value.reason.startswith("quantized 0 of 3 weight ops")


def test_an_output_bigger_than_its_input_fails_even_with_ops_quantized(tmp_path: Path) -> None:
    source = _float_model(tmp_path / "in")
    out = _int8_model(tmp_path / "out", padding_bytes=2 * SIZE_SLACK_BYTES)
    with pytest.raises(StepNotApplicable, match=r"bigger than its input .* although it quantized 1 MatMulInteger"):
        check_quantization_effect("quantize.x", source, "model.onnx", out, "model.onnx", COVERAGE, ["MatMul"])


def test_graph_overhead_on_a_tiny_model_is_not_called_bigger(tmp_path: Path) -> None:
    source = _float_model(tmp_path / "in")
    out = _int8_model(tmp_path / "out", padding_bytes=SIZE_SLACK_BYTES // 2)
    check_quantization_effect("quantize.x", source, "model.onnx", out, "model.onnx", COVERAGE, ["MatMul"])
