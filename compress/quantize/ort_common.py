"""What the ONNX Runtime quantization passes share: ORT's pre-processing and the float model to quantize."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slimline.core.errors import PassError

log = logging.getLogger(__name__)
ONNX_PROTOBUF_LIMIT_BYTES = 2**31 - 1


@dataclass(frozen=True)
class FloatModel:
    """The fp32 graph that quantization reads (pre-processed or not) and a scratch directory beside it."""

    path: Path
    large: bool  # over protobuf's 2 GB: weights must go to external data
    scratch: Path
    notes: dict[str, object]


@contextlib.contextmanager
def float_model_for_quantization(source: Path, preprocess: bool, pass_name: str) -> Iterator[FloatModel]:
    large = source.stat().st_size > ONNX_PROTOBUF_LIMIT_BYTES
    with tempfile.TemporaryDirectory(prefix="slimline-quantize-") as scratch:
        if not preprocess:
            yield FloatModel(source, large, Path(scratch), {"preprocess": False})
            return
        target = Path(scratch) / "preprocessed.onnx"
        notes = preprocess_for_quantization(source, target, large, pass_name)
        yield FloatModel(target, large, Path(scratch), notes)


def preprocess_for_quantization(source: Path, out: Path, large: bool, pass_name: str) -> dict[str, object]:
    """ORT's recommended pre-processing (shape inference + graph optimisation) before quantizing.

    Symbolic shape inference gives up on some transformer exports ("Incomplete symbolic shape
    inference") unless conflicting symbolic dims may be merged (auto_merge); if it still fails,
    ONNX's own shape inference is used instead, and the manifest says so. ORT dumps a debug model
    into the working directory when it gives up, so it runs from a scratch directory.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, out = source.resolve(), out.resolve()  # relative paths (a relative --out) break under the chdir
    failures = []
    for skip_symbolic in (False, True):
        try:
            with tempfile.TemporaryDirectory(prefix="slimline-preprocess-") as scratch, working_directory(scratch):
                quant_pre_process(str(source), str(out), skip_symbolic_shape=skip_symbolic, auto_merge=True,
                                  save_as_external_data=large)
            return {"preprocess": True, "symbolic_shape_inference": not skip_symbolic,
                    "preprocess_warnings": failures}
        except Exception as err:  # ORT raises plain Exceptions from shape inference
            failures.append(f"symbolic={not skip_symbolic}: {err}")
            log.info("quant_pre_process failed (%s); retrying without symbolic shape inference", err)
    raise PassError(f"{pass_name}: ORT pre-processing of {source} failed: {'; '.join(failures)}.",
                    fix="set `preprocess: false` in the recipe step to quantize the raw export.")


@contextlib.contextmanager
def working_directory(path: str) -> Iterator[None]:
    """contextlib.chdir exists only from Python 3.11; slimline supports 3.10."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


WEIGHT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def weight_op_coverage(model_path: Path, op_types: list[str]) -> dict[str, object]:
    """How many weight-carrying ops (a Conv/MatMul/Gemm whose weight is an initializer) the op_types reach.

    On a CNN the text defaults (MatMul, Gemm) quantize only the classifier: "1 of 53 weight ops" is a
    model that is barely smaller or faster, and the report must say so rather than stay silent."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    by_type: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in WEIGHT_OP_TYPES and len(node.input) > 1 and node.input[1] in initializers:
            by_type[node.op_type] = by_type.get(node.op_type, 0) + 1
    total = sum(by_type.values())
    covered = sum(count for op, count in by_type.items() if op in op_types)
    coverage: dict[str, object] = {"weight_ops": total, "quantized_weight_ops": covered, "by_type": by_type}
    if total and covered / total < 0.5:
        missing = sorted(op for op in by_type if op not in op_types)
        coverage["warning"] = (f"only {covered} of {total} weight ops quantized (op_types {op_types}); "
                               f"{', '.join(f'{by_type[op]} {op}' for op in missing)} stay fp32: add "
                               f"{missing} to op_types (static INT8 for Conv) or expect little gain")
    return coverage
