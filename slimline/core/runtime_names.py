"""The runtimes slimline knows, by name: one line each, and where each one's folder lives.

Everything about a runtime (its config, runner, availability check, what export must produce, its
bundle layout and serving loader) lives in its folder, `slimline/runtimes/<name>/`, imported only when
a run uses it (slimline.runtimes.get_runtime). The profile schema sits below that layer, so it checks
names (and the devices a runtime runs on, which a profile must agree with) here, without importing
anything. Adding a runtime touches its folder and one line of RUNTIMES below.
"""

from __future__ import annotations

from dataclasses import dataclass

#: `target.runtime: auto`: the plan times the profile's candidates side by side and keeps the fastest.
AUTO_RUNTIME = "auto"


@dataclass(frozen=True)
class RuntimeName:
    name: str
    module: str  # the runtime's package (its __init__ defines RUNTIME); imported on first use
    devices: tuple[str, ...]  # target.device values it runs on: a profile pairing it with another is invalid
    extra: str | None = None  # the `slimline[extra]` that installs it, when it is not a core dependency


#: One line per runtime.
RUNTIMES: dict[str, RuntimeName] = {entry.name: entry for entry in (
    RuntimeName("onnxruntime", "slimline.runtimes.onnxruntime", ("cpu", "cuda")),
    RuntimeName("openvino", "slimline.runtimes.openvino", ("cpu",), extra="openvino"),
    RuntimeName("tensorrt", "slimline.runtimes.tensorrt", ("cuda",), extra="tensorrt"),
    RuntimeName("torch", "slimline.runtimes.torch", ("cpu", "cuda")),
)}


def runtime_names() -> list[str]:
    return sorted(RUNTIMES)


def runtime_entry(name: str) -> RuntimeName:
    """The entry for `name`; ValueError (with the known names) for an unknown one."""
    entry = RUNTIMES.get(name)
    if entry is None:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(runtime_names())}")
    return entry


def device_problem(name: str, device: str) -> str | None:
    """Why runtime `name` cannot run on `device`, or None when it can."""
    entry = runtime_entry(name)
    if device in entry.devices:
        return None
    return f"runtime {name!r} needs device {' or '.join(repr(d) for d in entry.devices)}, not {device!r}"
