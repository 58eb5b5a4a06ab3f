"""The "torch-quantized" model directory: a PyTorch model whose weights are quantized for the torch runtime.

Shared by the compress passes that write it and the bench torch runner that reads it (a leaf: it
imports neither `compress` nor `bench`). A directory holds the HF `config.json`, the tokenizer side
files, `model.safetensors`, and `quantization.json` = {"scheme": ..., "format_version": 1, ...options}.

torch-int8-dynamic (`torch.ao.quantization.quantize_dynamic`, nn.Linear -> qint8 weights, activations
quantized on the fly, fbgemm/x86/qnnpack kernels: CPU only). safetensors has no qint8 dtype and a
pickled quantized model would be an arbitrary-code-execution hazard, so each quantized Linear `L` is
stored as plain tensors: `L.weight_int8` (int8), `L.weight_scale` (float64), `L.weight_zero_point`
(int64) - one value per tensor or per output channel - and `L.bias` (float32). quantization.json names
the modules with their qscheme. Loading builds the model from config.json, runs quantize_dynamic on
exactly those modules to get the module structure, puts the stored integers back with
`torch._make_per_{tensor,channel}_quantized_tensor` + `set_weight_bias`, then loads the float params
(tied ones recorded under "tied"). Packing the same integers again gives bit-identical outputs.
torch.ao.quantization is deprecated upstream in favour of torchao (pytorch/ao#2259) but still works in
torch 2.13; it needs no extra dependency, which is why it is used here.

bitsandbytes (bnb-int8 = LLM.int8, bnb-nf4 / bnb-fp4 = 4-bit) goes through transformers'
BitsAndBytesConfig and save_pretrained/from_pretrained: config.json carries the quantization_config.
What was found on this project's CPU machine (AMD EPYC, AVX2, no AVX-512; torch 2.13.0+cpu,
transformers 4.57.6, bitsandbytes 0.50.2, accelerate 1.15.0): int8, nf4 and fp4 (with and without
double quantization) quantize, run, save and reload bit-identically on CPU; bitsandbytes >= 0.48 ships
`libbitsandbytes_cpu.so`. Two surprises: transformers refuses bitsandbytes quantization without
`accelerate` ("requires Accelerate"), so the `bnb` extra needs it too; and transformers loads
bitsandbytes models in float16 unless told otherwise, which on CPU is slow, so the non-quantized
parts are kept in float32 on CPU (nf4/fp4: in compute_dtype). LLM.int8 casts fp32 activations to
fp16 inside its matmul and logs it on every call; it is logged once here. GPU
loading (device_map {"": "cuda"}) follows the documented transformers path but was not run here.
bitsandbytes models cannot be exported to ONNX or TensorRT (optimum #1914).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from slimline.core.deps import is_available
from slimline.core.errors import CheckpointError, MissingDependency
from slimline.formats.bnb_cpu_kernel import (
    layers_the_kernel_rejects,
    packed_kernel_active,
    quantized_layers_the_kernel_rejects,
)
from slimline.formats.hf import TASK_AUTO_CLASSES

logger = logging.getLogger(__name__)

QUANTIZATION_FILE = "quantization.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
INT8_DYNAMIC = "torch-int8-dynamic"
BNB_SCHEMES = ("bnb-int8", "bnb-nf4", "bnb-fp4")
SCHEMES = (INT8_DYNAMIC, *BNB_SCHEMES)
BNB_INSTALL = "pip install 'slimline[bnb]'  (bitsandbytes + accelerate)"
DtypeName = Literal["float32", "float16", "bfloat16"]
#: Files a quantizer writes itself; a pass copies everything else (tokenizer files) from its input.
MODEL_FILES = frozenset({"config.json", WEIGHTS_FILE, QUANTIZATION_FILE, "model.safetensors.index.json",
                         "pytorch_model.bin", "pytorch_model.bin.index.json"})


def is_weight_file(name: str) -> bool:
    return name in MODEL_FILES or name.endswith((".safetensors", ".bin"))


def read_quantization(path: Path) -> dict[str, Any]:
    """quantization.json of a torch-quantized directory, validated enough to pick a loader."""
    qpath = Path(path) / QUANTIZATION_FILE
    if not qpath.is_file():
        raise CheckpointError(f"{path} has no {QUANTIZATION_FILE}: it is not a torch-quantized model directory.",
                              fix="rerun the quantization pass that should have produced it.")
    try:
        info = json.loads(qpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{qpath} is not valid JSON: {err}.", fix="rerun the quantization pass.") from err
    if not isinstance(info, dict) or info.get("scheme") not in SCHEMES:
        raise CheckpointError(f"{qpath} names scheme {info.get('scheme') if isinstance(info, dict) else None!r}; "
                              f"known schemes: {', '.join(SCHEMES)}.", fix="rerun the quantization pass.")
    if info.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(f"{qpath} has format_version {info['format_version']}, newer than this slimline "
                              f"reads ({FORMAT_VERSION}).", fix="upgrade slimline.")
    return info


def write_quantization(out_dir: Path, info: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, **info}
    (Path(out_dir) / QUANTIZATION_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n",
                                                   encoding="utf-8")


def load_torch_quantized(path: Path, task: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The model in eval mode on `device`, and its quantization.json."""
    info = read_quantization(path)
    if info["scheme"] == INT8_DYNAMIC:
        if device != "cpu":
            raise CheckpointError(f"{path} is {INT8_DYNAMIC}, whose kernels (fbgemm/qnnpack) run on CPU only, "
                                  f"but it was asked to run on {device}.", fix="benchmark it on a CPU target.")
        return load_int8_dynamic(Path(path), task, info), info
    return load_bnb(Path(path), task, info, device), info


# --- torch-int8-dynamic -------------------------------------------------------------------------


def linear_module_names(model: Any) -> list[str]:
    """Names of the nn.Linear modules quantize_dynamic can convert (HF's GPT-2 Conv1D is not one)."""
    import torch

    return [name for name, module in model.named_modules() if type(module) is torch.nn.Linear]


def quantize_int8_dynamic(model: Any, module_names: Iterable[str], per_channel: bool) -> Any:
    """Convert exactly `module_names` (nn.Linear) to dynamic qint8, in place; returns the model."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = dict.fromkeys(module_names, qconfig)
    with warnings.catch_warnings():  # quantized-tensor creation is deprecated upstream (pytorch #184982)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model.eval(), spec, dtype=torch.qint8, inplace=True) if spec else model.eval()


def _dynamic_linears(model: Any) -> dict[str, Any]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {name: module for name, module in model.named_modules() if isinstance(module, DynamicLinear)}


def _quantized_keys(state: dict[str, Any], module_names: Iterable[str]) -> set[str]:
    prefixes = tuple(f"{name}." for name in module_names)
    return {key for key in state if key.startswith(prefixes)} if prefixes else set()


def save_int8_dynamic(model: Any, out_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write config.json, model.safetensors and quantization.json for a quantize_dynamic'ed HF model."""
    import torch
    from safetensors.torch import save_file

    linears = _dynamic_linears(model)
    tensors: dict[str, Any] = {}
    modules: dict[str, dict[str, Any]] = {}
    for name, module in linears.items():
        weight, bias = module._weight_bias()
        tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
        if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            tensors[f"{name}.weight_scale"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
            tensors[f"{name}.weight_zero_point"] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
            modules[name] = {"qscheme": "per_tensor_affine"}
        else:
            tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales().to(torch.float64).contiguous()
            tensors[f"{name}.weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int64).contiguous()
            modules[name] = {"qscheme": "per_channel_affine", "axis": int(weight.q_per_channel_axis())}
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().contiguous()
    state = model.state_dict()
    skip = _quantized_keys(state, linears)
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    tied: dict[str, str] = {}
    for key, value in state.items():
        if key in skip or not isinstance(value, torch.Tensor):
            continue
        identity = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
        if value.numel() and identity in seen:  # tied weights: safetensors refuses shared storage
            tied[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = value.detach().contiguous()
    out_dir = Path(out_dir)
    model.config.save_pretrained(out_dir)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "slimline_scheme": INT8_DYNAMIC})
    info = {"scheme": INT8_DYNAMIC, "weight_dtype": "qint8", "engine": torch.backends.quantized.engine,
            **options, "modules": modules, "tied": tied}
    write_quantization(out_dir, info)
    return info


def _quantized_weight(tensors: dict[str, Any], name: str, spec: dict[str, Any]) -> Any:
    import torch

    int_repr, scale, zero_point = (tensors[f"{name}.weight_{part}"] for part in ("int8", "scale", "zero_point"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if spec["qscheme"] == "per_tensor_affine":
            return torch._make_per_tensor_quantized_tensor(int_repr, float(scale[0]), int(zero_point[0]))
        return torch._make_per_channel_quantized_tensor(int_repr, scale, zero_point, int(spec["axis"]))


def load_int8_dynamic(path: Path, task: str, info: dict[str, Any]) -> Any:
    import torch
    import transformers
    from safetensors.torch import load_file

    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        model = auto_class.from_config(config, attn_implementation="eager", dtype=torch.float32)
        tensors = load_file(str(path / WEIGHTS_FILE))
    except Exception as err:
        raise CheckpointError(f"could not rebuild the {task} model in {path}: {err}.",
                              fix="rerun the quantization pass that produced it.") from err
    modules: dict[str, dict[str, Any]] = info.get("modules", {})
    per_channel = {spec["qscheme"] for spec in modules.values()} == {"per_channel_affine"}
    model = quantize_int8_dynamic(model, modules, per_channel)
    linears = _dynamic_linears(model)
    if set(linears) != set(modules):
        raise CheckpointError(f"{path}: quantization.json names modules {sorted(set(modules) - set(linears))} "
                              "that this model does not have.", fix="rerun the quantization pass.")
    try:
        for name, spec in modules.items():
            linears[name].set_weight_bias(_quantized_weight(tensors, name, spec), tensors.get(f"{name}.bias"))
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}/{WEIGHTS_FILE} has no usable int8 weight for {err}.",
                              fix="rerun the quantization pass.") from err
    state = model.state_dict()
    quantized_keys = _quantized_keys(state, modules)
    expected = {key for key, value in state.items() if isinstance(value, torch.Tensor)} - quantized_keys
    floats = {key: value for key, value in tensors.items() if key in expected}
    tied: dict[str, str] = info.get("tied", {})
    missing = sorted(expected - set(floats) - set(tied))
    if missing:
        raise CheckpointError(f"{path}/{WEIGHTS_FILE} lacks {len(missing)} tensors, e.g. {missing[:3]}.",
                              fix="rerun the quantization pass.")
    state.update(floats)
    state.update({alias: floats[kept] for alias, kept in tied.items()})
    model.load_state_dict(state, strict=True)
    return model.eval()


# --- bitsandbytes -------------------------------------------------------------------------------


def require_bnb(purpose: str) -> None:
    """bitsandbytes and accelerate (transformers' bnb integration refuses to run without it)."""
    missing = [module for module in ("bitsandbytes", "accelerate") if not is_available(module)]
    if missing:
        raise MissingDependency(f"{purpose} needs {' and '.join(missing)}, which cannot be imported here.",
                                fix=BNB_INSTALL)


def bnb_scheme(load_in: Literal["int8", "4bit"], quant_type: str = "nf4") -> str:
    return "bnb-int8" if load_in == "int8" else f"bnb-{quant_type}"


def storage_dtype(info: dict[str, Any], device: str) -> str:
    """dtype of the parts bitsandbytes leaves unquantized: fp32 on CPU (fp16 there is slow), fp16 on GPU
    for LLM.int8 (its matmul runs in fp16 anyway), compute_dtype for 4-bit."""
    if info["scheme"] == "bnb-int8":
        return "float32" if device == "cpu" else "float16"
    return str(info.get("compute_dtype", "float32"))


def _bnb_config(info: dict[str, Any]) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    skip = list(info.get("skip_modules") or []) or None
    if info["scheme"] == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(info.get("threshold", 6.0)),
                                  llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=info["scheme"].removeprefix("bnb-"),
                              bnb_4bit_compute_dtype=getattr(torch, info.get("compute_dtype", "float32")),
                              bnb_4bit_use_double_quant=bool(info.get("double_quant", False)),
                              llm_int8_skip_modules=skip)


class _OnceFilter(logging.Filter):
    """Let a log message that starts with `prefix` through once."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


def _quiet_int8_matmul() -> None:
    """LLM.int8 logs on every forward that fp32 inputs are cast to fp16; once is enough."""
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in bnb_log.filters):
        bnb_log.addFilter(_OnceFilter("MatMul8bitLt: inputs will be cast"))


def _from_pretrained(source: Path, task: str, device: str, dtype: str, **kwargs: Any) -> Any:
    import torch
    import transformers

    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    return auto_class.from_pretrained(source, dtype=getattr(torch, dtype), device_map={"": device},
                                      attn_implementation="eager", **kwargs).eval()


def quantize_bnb(source: Path, out_dir: Path, task: str, info: dict[str, Any], device: str) -> dict[str, Any]:
    """Load the fp32 HF checkpoint through BitsAndBytesConfig on `device` and save it; returns quantization.json.

    `info` holds the scheme and its options (threshold / skip_modules, or compute_dtype / double_quant).
    """
    require_bnb(info["scheme"])
    info = {**info, "dtype": storage_dtype(info, device)}
    if info["scheme"] != "bnb-int8" and packed_kernel_active(device):
        info = _skip_layers_the_cpu_kernel_rejects(source, task, info)
    model = _from_pretrained(source, task, device, info["dtype"], quantization_config=_bnb_config(info))
    model.save_pretrained(out_dir, safe_serialization=True)
    import bitsandbytes

    info["bitsandbytes_version"] = bitsandbytes.__version__
    write_quantization(out_dir, info)
    return info


def _skip_layers_the_cpu_kernel_rejects(source: Path, task: str, info: dict[str, Any]) -> dict[str, Any]:
    """Add the layers bitsandbytes' AVX-512 4-bit kernel cannot run to the skip list (slimline.formats.bnb_cpu_kernel).

    The skip list replaces transformers' default modules_to_not_convert (the task head), so that
    default is kept too.
    """
    import transformers
    from accelerate import init_empty_weights
    from transformers.integrations.bitsandbytes import get_keys_to_not_convert

    config = transformers.AutoConfig.from_pretrained(source)
    with init_empty_weights():  # shapes only: no weights are read or allocated
        skeleton = getattr(transformers, TASK_AUTO_CLASSES[task]).from_config(config)
    skipped = list(info.get("skip_modules") or []) or list(get_keys_to_not_convert(skeleton))
    rejected = layers_the_kernel_rejects(skeleton, skipped)
    if rejected:
        logger.warning("bitsandbytes' AVX-512 4-bit CPU kernel needs in_features %% 64 == 0 and out_features %% 32 "
                       "== 0; leaving %d layer(s) in %s: %s", len(rejected), info["dtype"], ", ".join(rejected[:8]))
    return {**info, "skip_modules": [*skipped, *rejected], "kept_in_float_for_cpu_kernel": rejected}


def load_bnb(path: Path, task: str, info: dict[str, Any], device: str) -> Any:
    """config.json carries the quantization_config, so from_pretrained rebuilds the bnb layers itself."""
    require_bnb(f"loading the {info['scheme']} model in {path}")
    if info["scheme"] == "bnb-int8":
        _quiet_int8_matmul()
    dtype = info.get("dtype") or storage_dtype(info, device)
    try:
        model = _from_pretrained(path, task, device, dtype)
    except Exception as err:
        raise CheckpointError(f"transformers could not load the {info['scheme']} model in {path} on {device}: "
                              f"{err}.", fix="rerun the quantization pass on this machine.") from err
    rejected = quantized_layers_the_kernel_rejects(model) if packed_kernel_active(device) else []
    if rejected:
        raise CheckpointError(f"{path} holds 4-bit layers that bitsandbytes' AVX-512 CPU kernel on this machine "
                              f"cannot run ({', '.join(rejected[:5])}{' ...' if len(rejected) > 5 else ''}: "
                              "in_features must be a multiple of 64, out_features of 32); it was quantized on a "
                              "CPU without that kernel.",
                              fix="rerun the 4-bit pass on this machine: it keeps such layers in float here.")
    return model
