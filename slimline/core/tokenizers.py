"""Loading a model's tokenizer so that batching never crashes on a tokenizer without a pad token.

Llama-family tokenizers commonly ship without a pad token, and `tokenizer(texts, padding=True)`
then raises "Asking to pad but the tokenizer does not have a padding token". Every slimline batch
carries an attention mask, so the padded positions are masked out and *which* id fills them does
not change the real positions' outputs: the EOS token is then a safe filler (transformers' own
generation does the same). The substitution is logged and returned as a note for the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PAD_FROM_EOS_NOTE = ("the tokenizer has no pad token: its EOS token {eos!r} pads batches (padded positions are "
                     "masked by attention_mask, so real tokens' outputs do not change)")


def ensure_pad_token(tokenizer: Any) -> str | None:
    """Give a pad-less tokenizer EOS (else UNK) as its pad token; return a note saying so, None if nothing changed."""
    if getattr(tokenizer, "pad_token", None) is not None:
        return None
    for attribute in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, attribute, None)
        if token is not None:
            tokenizer.pad_token = token
            note = PAD_FROM_EOS_NOTE.format(eos=token)
            if attribute != "eos_token":
                note = note.replace("EOS", attribute.removesuffix("_token").upper())
            log.warning(note)
            return note
    return None  # no special token at all: callers must not pad (batch of one)


def load_tokenizer(model_dir: Path) -> tuple[Any, str | None]:
    """The tokenizer saved in `model_dir`, ready to pad; and the padding note (None when it has its own pad)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tokenizer, ensure_pad_token(tokenizer)
