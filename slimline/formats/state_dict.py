"""The model's weights inside what training scripts save: a state dict, or one wrapped in a training checkpoint.

Training loops save `{"step", "model_state", "optimizer_state"}`, Lightning `{"state_dict", ...}`, many scripts
`{"model": ...}`; DataParallel / DistributedDataParallel prefix every key with `module.` and torch.compile with
`_orig_mod.`. These are unwrapped with a note that says what was taken (printed and kept in the manifest), so a
user need not re-save. What cannot be unwrapped is refused with the keys found, so the user sees at once that
the file holds, say, only an optimizer state. Only the unambiguous cases are guessed: a wrapper key among the
known names whose value is a dict of tensors, and a prefix every key carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimline.core.errors import CheckpointError, shorten

#: Keys under which training checkpoints keep the model's weights, most specific first.
WRAPPER_KEYS = ("model_state_dict", "model_state", "state_dict", "model", "module", "net", "network", "weights")
#: Prefixes every key gets from a wrapper module: DataParallel / DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED_KEYS = 12


@dataclass
class UnwrappedState:
    tensors: dict[str, Any]
    #: What was unwrapped, in order ("the `model_state` entry", "the `module.` prefix ..."); empty for a plain dict.
    steps: list[str] = field(default_factory=list)

    @property
    def note(self) -> str | None:
        return None if not self.steps else "weights taken from " + "; ".join(self.steps)


def _is_tensor_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _listed(keys: list[Any]) -> str:
    names = [k if isinstance(k, str) else shorten(k, 60) for k in keys[:MAX_LISTED_KEYS]]
    more = f" and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
    return ", ".join(n if len(n) <= 60 else n[:57] + "..." for n in names) + more


def unwrap_state_dict(loaded: Any, source: str) -> UnwrappedState:
    """The tensors of the model inside `loaded` (what torch.load / safetensors returned); raise CheckpointError
    naming the keys found when there is none."""
    import torch

    state, steps = loaded, []
    for _ in range(3):  # nested wrappers ({"model": {"state_dict": ...}}) are rare but real
        if not isinstance(state, dict) or _is_tensor_dict(state):
            break
        key = next((k for k in WRAPPER_KEYS if isinstance(state.get(k), dict) and state[k]), None)
        if key is None:
            break
        steps.append(f"the `{key}` entry of a training checkpoint (keys: {_listed(list(state))})")
        state = state[key]
    if not _is_tensor_dict(state):
        if isinstance(loaded, dict) and loaded:
            others = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
            found = f"it holds keys {_listed(list(loaded))}" + (f", of which {_listed(others)} are not tensors"
                                                                  if len(others) < len(loaded) else "")
        else:
            found = f"it holds a {type(loaded).__name__}" + (" with no entries" if isinstance(loaded, dict) else "")
        raise CheckpointError(f"{source} is not a state dict of tensors: {found}; none of "
                              f"{', '.join(WRAPPER_KEYS)} holds the model's weights.",
                              fix="save model.state_dict() (torch.save or safetensors' save_file), or the "
                                  "checkpoint's model entry: torch.save(checkpoint['<key>'], 'weights.pt').")
    for prefix in WRAPPER_PREFIXES:
        if all(isinstance(k, str) and k.startswith(prefix) for k in state):
            origin = "DataParallel / DistributedDataParallel" if prefix == "module." else "torch.compile"
            steps.append(f"with the `{prefix}` prefix of every key stripped ({origin})")
            state = {k[len(prefix):]: v for k, v in state.items()}
    return UnwrappedState(dict(state), steps)


def match_module_keys(state: dict[str, Any], expected: set[str]) -> tuple[dict[str, Any], str | None]:
    """Strip one leading component every key shares (`model.` from a Lightning module's attribute) when that makes
    the keys exactly the module's own; else the state as it is. Returns (state, note or None)."""
    if set(state) == expected or not state:
        return state, None
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) != 1 or not all("." in k for k in state):
        return state, None
    head = next(iter(heads))
    stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
    if set(stripped) != expected:
        return state, None
    return stripped, f"with the `{head}.` prefix every key shares stripped (the module's own names)"
