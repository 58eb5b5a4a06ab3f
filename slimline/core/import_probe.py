"""Do the imports an export needs work in this environment? Asked in a subprocess, for `slimline doctor`.

A package that transformers imports when it is installed can break every export without being used by
slimline at all: a torchvision built for another torch fails with "operator torchvision::nms does not
exist" deep inside `from optimum.exporters.onnx import main_export`, which transformers then reports as
"Could not import module 'main_export'". The probe runs in a fresh interpreter (a broken extension can
abort the process, and a half-imported module must not linger in the doctor's), follows the exception
chain to the exception that really failed, and names the package whose import it broke: the innermost
frame that runs a module's top-level code (`<module>`) outside the standard library. The frame that raised
is not the culprit: a torchvision wheel built for CUDA beside the CPU torch fails inside torch's own
`torch/library.py` ("operator torchvision::nms does not exist") while torchvision's
`_meta_registrations.py` is being imported, and blaming torch sent users to reinstall the one package that
was fine (issue 20).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

#: (what it is for, the statements an export runs through)
IMPORT_PROBES: tuple[tuple[str, str], ...] = (
    ("torch", "import torch, torch.onnx"),
    ("transformers (model loading)", "import transformers; transformers.AutoModelForSequenceClassification; "
                                     "import transformers.modeling_utils, transformers.loss.loss_utils"),
    ("optimum-onnx exporter", "from optimum.exporters.onnx import main_export; "
                              "from optimum.exporters.tasks import TasksManager"),
    ("onnxruntime quantization", "import onnxruntime; from onnxruntime.quantization import quantize_dynamic"),
)
PROBE_TIMEOUT_S = 240

_PROBE_SCRIPT = r"""
import json, os, sys, sysconfig, traceback
from importlib import metadata

STDLIB = tuple(os.path.join(os.path.abspath(sysconfig.get_paths()[key]), "") for key in ("stdlib", "platstdlib"))

def in_stdlib(filename):
    parts = filename.split(os.sep)
    return filename.startswith(STDLIB) and "site-packages" not in parts and "dist-packages" not in parts

def top_package(filename):
    if in_stdlib(filename):
        return None
    for entry in sorted((p for p in sys.path if p), key=len, reverse=True):
        prefix = os.path.join(os.path.abspath(entry), "")
        if filename.startswith(prefix):
            return filename[len(prefix):].split(os.sep)[0].removesuffix(".py")
    return None

def root_cause(err):
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            break
        err = nxt
    return err

results = []
for label, statements in json.loads(sys.argv[1]):
    try:
        exec(statements, {})
        results.append({"probe": label, "ok": True})
    except BaseException as err:
        root = root_cause(err)
        frames = [(f, top_package(os.path.abspath(f.filename))) for f in traceback.extract_tb(root.__traceback__)]
        raised_in = next(((f, pkg) for f, pkg in reversed(frames) if pkg), (None, None))
        importing = next(((f, pkg) for f, pkg in reversed(frames) if pkg and f.name == "<module>"), raised_in)
        frame, culprit = importing
        dists = metadata.packages_distributions().get(culprit or "", [])
        results.append({"probe": label, "ok": False, "error": f"{type(root).__name__}: {root}"[:400],
                        "raised": f"{type(err).__name__}: {err}"[:300], "culprit": culprit,
                        "file": frame.filename if frame else None,
                        "raised_in": raised_in[0].filename if raised_in[0] and raised_in[0] is not frame else None,
                        "distribution": dists[0] if dists else culprit})
print("SLIMLINE-PROBE " + json.dumps(results))
"""


@dataclass(frozen=True)
class ImportFailure:
    probe: str
    error: str
    culprit: str | None  # the top-level package whose import failed
    distribution: str | None
    file: str | None  # that package's file being imported when it failed
    raised_in: str | None = None  # the file that raised, when it belongs to another package (torch for torchvision)

    def fix(self, torch_version: str | None) -> str:
        dist = self.distribution or self.culprit
        if dist == "torchvision":
            return ("pip uninstall -y torchvision  (slimline does not use it; transformers imports it whenever it is "
                    f"installed), or install the torchvision release built for torch {torch_version or 'this torch'}")
        if dist in (None, "torch", "transformers", "optimum", "optimum-onnx", "onnxruntime"):
            return (f"pip install --force-reinstall {dist or 'slimline'}  (slimline pins the versions that work "
                    "together; from a checkout: scripts/install.sh)")
        return (f"pip uninstall -y {dist}  (if nothing here needs it: it breaks an import the export needs), or "
                f"pip install --force-reinstall {dist} for this torch {torch_version or ''}".rstrip())


def probe_export_imports(timeout_s: float = PROBE_TIMEOUT_S) -> list[ImportFailure] | str:
    """The failing probes (empty when all import), or a string saying why the probe itself could not run."""
    try:
        completed = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT, json.dumps(IMPORT_PROBES)],
                                   capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"the import probe did not finish within {timeout_s:.0f} s"
    except OSError as err:
        return f"the import probe could not start: {err}"
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("SLIMLINE-PROBE ")), None)
    if line is None:  # the interpreter died (e.g. a segfault in an extension) before it could report
        tail = (completed.stderr or "").strip().splitlines()[-3:]
        return f"the import probe exited with code {completed.returncode}: {' | '.join(tail) or 'no output'}"
    return [ImportFailure(probe=r["probe"], error=r["error"], culprit=r.get("culprit"),
                          distribution=r.get("distribution"), file=r.get("file"), raised_in=r.get("raised_in"))
            for r in json.loads(line.removeprefix("SLIMLINE-PROBE ")) if not r["ok"]]
