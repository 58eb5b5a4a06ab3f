"""Why an ONNX export failed, told apart by cause, each with its own fix.

Every exporter failing used to be reported as "an op unsupported at this opset is the usual cause",
even when transformers could not build the model at all. The causes checked, in order: the architecture
(transformers does not know the model_type, or it has no head for the task; from config.json, not from
error text), a module the exporters import that is broken here (`slimline doctor` names it), an
operator the exporter cannot translate at this opset (named when the exporter names it), and anything
else (shown as raised, with the way to see the traceback).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from slimline.core.errors import CheckpointError, ExportError
from slimline.formats.architecture import architecture_problem

#: torch.onnx's TorchScript exporter and the dynamo exporter name the op in these forms.
UNSUPPORTED_OP_PATTERNS = (
    re.compile(r"Exporting the operator '?([\w:.]+)'? to ONNX opset version (\d+) is not supported"),
    re.compile(r"[Uu]nsupported(?: ONNX)? op(?:erator)?[^'\"`]*['\"`]([\w:.]+)['\"`]"),
    re.compile(r"No (?:decomposition|symbolic function) (?:function )?(?:registered )?for ['\"`]?([\w:.]+)"),
)


def unsupported_op(errors: list[BaseException]) -> str | None:
    """The operator an exporter said it cannot export, if any error names one."""
    for err in errors:
        for pattern in UNSUPPORTED_OP_PATTERNS:
            match = pattern.search(str(err))
            if match:
                return match.group(1)
        if type(err).__name__ == "UnsupportedOperatorError":  # torch.onnx.errors: the op is in its message
            return (str(err).splitlines() or ["?"])[0][:80]
    return None


def _chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def broken_import(errors: list[BaseException]) -> str | None:
    """What really failed when an exporter could not import one of its own modules (transformers turns a
    crash inside an optional package into "Could not import module 'main_export'")."""
    for err in errors:
        chain = _chain(err)
        if any(isinstance(e, ImportError) for e in chain):
            root = chain[-1]
            frames = traceback.extract_tb(root.__traceback__)
            where = f" (raised in {frames[-1].filename})" if frames else ""
            return f"{type(root).__name__}: {root}{where}"
    return None


def export_failure(source: Path, task: str, opset: int, attempts: list[tuple[str, BaseException]]) -> Exception:
    """The error to raise when every exporter failed: a CheckpointError (exit 2) when the input cannot be
    built by transformers, else an ExportError (exit 3) whose fix matches the cause."""
    details = "\n  ".join(f"{name}: {type(err).__name__}: {err}" for name, err in attempts)
    problem = architecture_problem(source, task)
    if problem is not None:
        return CheckpointError(problem.message, fix=problem.fix)
    broken = broken_import([err for _, err in attempts])
    if broken is not None:
        return ExportError(f"ONNX export of {source} ({task}) failed because a module the exporters import is "
                           f"broken in this environment: {broken}.\n  {details}",
                           fix="run `slimline doctor`: it names the broken package and how to fix it (a torchvision "
                               "built for another torch is the usual cause: pip uninstall -y torchvision).")
    op = unsupported_op([err for _, err in attempts])
    if op is not None:
        return ExportError(f"ONNX export of {source} ({task}) failed: the operator {op} cannot be exported at opset "
                           f"{opset}.\n  {details}",
                           fix=f"try another opset (--opset {max(14, opset - 1)} or --opset {min(21, opset + 2)}; in "
                               "a recipe run, the export step's `opset`), or --exporter torch / optimum; if no opset "
                               f"works, {op} needs a replacement in the model or a custom symbolic.")
    return ExportError(f"ONNX export of {source} ({task}) failed with every exporter:\n  {details}",
                       fix="the first error above names the failing call (rerun with -v for the traceback); check "
                           "that the checkpoint loads with transformers for this task, and report it with this "
                           "message if it does.")
