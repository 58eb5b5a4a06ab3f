"""The runtime as a search dimension, and the budgets a trial can fail before anything is built.

A trial's recipe decides its runtime: a recipe whose last ONNX-level step writes an OpenVINO IR runs on
OpenVINO, an ONNX one on the profile's runtime (ONNX Runtime). So the space's `quantization` options span
runtimes x schemes (students x runtime x scheme), and each trial is planned, screened and timed on the
runtime that loads what it made.

Before a trial's stages are built (a student's distillation takes minutes), what can already be known is
checked: that its runtime is installed, and that its size fits the profile's size_mb budget, estimated
from the checkpoint's architecture (config.json) and the recipe (how much pruning removes, how many bytes
each scheme stores per weight, and whether it quantizes the embedding table). The estimate is refused only
when it exceeds the budget by more than ESTIMATE_MARGIN, so estimation error can reject nothing that fits.
"""

from __future__ import annotations

import math
from typing import Any

from slimline.compression.catalogue import pass_class
from slimline.core.errors import MissingDependency
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime, runtime_for_format

#: A trial is rejected when its estimated size exceeds the size_mb budget by more than this fraction.
ESTIMATE_MARGIN = 0.10
FP32 = 4.0


def recipe_format(recipe: list[dict[str, Any]], start: str = "onnx") -> str:
    """The format the recipe's last ONNX-level step produces (the export's ONNX when there is none)."""
    produced = start
    for step in recipe:
        cls = pass_class(str(step.get("pass")))
        if cls is not None and cls.stage == "onnx":
            produced = cls.produces
    return produced


def profile_for_recipe(profile: Profile, recipe: list[dict[str, Any]]) -> Profile:
    """The profile with the runtime that loads what the recipe makes (its own when it does)."""
    runtime = runtime_for_format(recipe_format(recipe), profile.target.runtime).name
    if runtime == profile.target.runtime and not profile.target.candidates:
        return profile
    options = next((dict(c.runtime_options) for c in profile.target.candidates if c.runtime == runtime),
                   dict(profile.target.runtime_options) if runtime == profile.target.runtime else {})
    target = profile.target.model_copy(update={"runtime": runtime, "candidates": [], "runtime_options": options})
    return profile.model_copy(update={"target": target})


def _weight_bytes(recipe: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(bytes per matmul weight, bytes per embedding weight) of the recipe's quantization; None: unknown."""
    matmul, embedding, fused = FP32, FP32, False
    for step in recipe:
        name, options = str(step.get("pass")), step.get("with") or {}
        if name == "optimize.ort-transformers":
            fused = True
        elif name == "quantize.ort-int8-dynamic":
            op_types = options.get("op_types", ["MatMul", "Gemm", "Attention", "EmbedLayerNormalization"])
            matmul = 1.0
            fused_embedding = "EmbedLayerNormalization" in op_types and fused and not options.get("per_channel")
            embedding = 1.0 if fused_embedding or ("Gather" in op_types and not fused) else FP32
        elif name == "quantize.ort-int8-static":
            matmul = 1.0
            embedding = 1.0 if "Gather" in options.get("op_types", ["MatMul", "Gemm"]) else FP32
        elif name == "quantize.ort-int4-weight-only":
            block = int(options.get("block_size", 32))
            matmul = 0.5 + 4.0 / block  # 4-bit weights + an fp32 scale per block
            embedding = FP32 if fused else matmul
        elif name == "quantize.nncf-int8":
            matmul, embedding = 1.0, 1.0
        elif name == "quantize.nncf-weight-compression":
            matmul = embedding = 1.0 if str(options.get("mode", "int8")).startswith("int8") else 0.5 + 2.0 / 128
        elif name == "convert.openvino-precision":
            if options.get("compress_to_fp16", True) and matmul == FP32:
                matmul = embedding = 2.0  # fp16-stored weights of an fp32 graph
        elif name == "convert.fp16":
            matmul = embedding = 2.0
        elif name.startswith("quantize.") and pass_class(name) is not None:
            return None  # a scheme this estimate does not know
    return matmul, embedding


def _kept_fractions(recipe: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(attention kept, FFN kept, layers kept) after the recipe's pruning."""
    heads, ffn, layers = 1.0, 1.0, 1.0
    for step in recipe:
        name, options = str(step.get("pass")), step.get("with") or {}
        if name == "prune.structured":
            heads *= 1.0 - float(options.get("heads_ratio", 0.0))
            ffn *= 1.0 - float(options.get("ffn_ratio", 0.0))
        elif name == "prune.layers" and options.get("keep_every"):
            layers *= 1.0 / float(options["keep_every"])
    return heads, ffn, layers


def estimate_size_mb(recipe: list[dict[str, Any]], config: dict[str, Any]) -> float | None:
    """The artifact's size from an encoder's config.json and the recipe; None when either is unknown."""
    try:
        hidden, depth = int(config["hidden_size"]), int(config["num_hidden_layers"])
        inner = int(config.get("intermediate_size") or 4 * hidden)
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    bytes_per = _weight_bytes(recipe)
    if bytes_per is None:
        return None
    heads, ffn, layers = _kept_fractions(recipe)
    kept_layers = math.ceil(depth * layers)
    embedding = (vocab + int(config.get("max_position_embeddings") or 0) + int(config.get("type_vocab_size") or 0)) \
        * hidden
    per_layer = 4 * hidden * hidden * heads + 2 * hidden * inner * ffn
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels") or 2)
    head = hidden * hidden + hidden * labels
    matmul_bytes, embedding_bytes = bytes_per
    total = embedding * embedding_bytes + (kept_layers * per_layer + head) * matmul_bytes
    return total * 1.01 / 1e6  # biases and norms: about 1%


def pre_build_problem(recipe: list[dict[str, Any]], profile: Profile, config: dict[str, Any]) -> str | None:
    """Why this trial cannot pass, known before any stage is built; None when nothing is known to fail."""
    trial_profile = profile_for_recipe(profile, recipe)
    runtime = get_runtime(trial_profile.target.runtime)
    try:
        runtime.check_available(trial_profile.target, f"a trial on {runtime.name}")
    except MissingDependency as err:
        return f"runtime {runtime.name} is not available here: {str(err).splitlines()[0]} (fix: {err.fix})"
    budget = profile.budgets.get("size_mb")
    estimate = estimate_size_mb(recipe, config)
    if budget is not None and budget.kind == "max" and estimate is not None \
            and estimate > budget.limit * (1 + ESTIMATE_MARGIN):
        return (f"estimated size {estimate:.1f} MB (from the architecture and the recipe) exceeds the size_mb "
                f"budget {budget.limit:g} by more than {ESTIMATE_MARGIN:.0%}")
    return None
