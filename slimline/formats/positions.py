"""How many tokens a checkpoint can take at once, read from its module graph: a profile asking for more is refused.

A model with a learned (absolute) position table has one row per position: BERT's `position_embeddings`, GPT-2's
`wpe`. Fed a longer sequence it does not degrade, it crashes: an index error in the first stage that runs it (the
pruning pre-flight) or in ONNX Runtime's Gather at the benchmark, exit 3 minutes in. RoBERTa-style tables (XLM-R,
MPNet ...) also spend their first `padding_idx + 1` rows before the first real token, so a table of 514 rows takes
512 tokens. Both facts are read from the model built on the meta device (the table is the `nn.Embedding` with
`max_position_embeddings` / `n_positions` rows that is not the token embedding; the offset is its `padding_idx`),
not from a table of families. Rotary and relative-only positions (Llama, ModernBERT, DeBERTa-v3 with
`position_biased_input: false`) have no such table and no limit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimline.core.errors import ProfileError
from slimline.profiles.schema import Profile

#: Tasks whose profile shapes count tokens (an image model's sequence_length is not fed to it).
TOKEN_TASKS = frozenset({"text-classification", "feature-extraction", "text-generation"})


@dataclass(frozen=True)
class TokenLimit:
    tokens: int
    table: str  # the module's name, e.g. roberta.embeddings.position_embeddings
    rows: int
    padding_idx: int | None

    def why(self) -> str:
        offset = (f", and real tokens' positions start after its padding index {self.padding_idx}"
                  if self.padding_idx is not None else "")
        return f"its learned position table {self.table} has {self.rows} rows{offset}"


def token_limit(model: Any, config: dict[str, Any]) -> TokenLimit | None:
    """The learned position table's limit of `model` (built from `config`, on any device), or None without one."""
    from torch import nn

    rows = config.get("max_position_embeddings") or config.get("n_positions")
    if not isinstance(rows, int) or rows <= 0:
        return None
    tokens = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module is not tokens and module.num_embeddings == rows:
            padding = module.padding_idx
            usable = rows - (padding + 1 if padding is not None else 0)
            return TokenLimit(max(usable, 0), name, rows, padding)
    return None


def check_profile_tokens(model: Any, config: dict[str, Any], task: str, path: Path, profile: Profile) -> None:
    """ProfileError (exit 2, before any stage) when a shape of `profile` (plus the decoded tokens of a causal LM)
    needs more positions than the checkpoint at `path` has."""
    if task not in TOKEN_TASKS:
        return
    limit = token_limit(model, config)
    if limit is None:
        return
    decoded = profile.measurement.decode_tokens if task == "text-generation" else 0
    longest = max(shape.sequence_length for shape in profile.shapes)
    if longest + decoded <= limit.tokens:
        return
    asked = f"sequence_length {longest}" + (f" + {decoded} decoded tokens" if decoded else "")
    most = limit.tokens - decoded
    lower = (f"set every shapes[].sequence_length to {most} or less" if most > 0
             else f"lower measurement.decode_tokens below {limit.tokens}")
    raise ProfileError(f"profile {profile.name} feeds {longest + decoded} tokens ({asked}), but {path} takes at most "
                       f"{limit.tokens}: {limit.why()}.",
                       fix=f"{lower} (copy the profile: `slimline profiles show NAME > my.yaml`), or use a checkpoint "
                           "with a longer position table.")
