"""Greedy text generation from a causal-LM bundle: the ONNX engine with its KV cache and the bundle's tokenizer.

The decode loop is slimline.formats.causal_lm's, the one the benchmark timed, so the served tokens/s
is the measured one. One generation runs at a time per engine (a lock): the KV cache is per request
and ONNX Runtime's threads are already all in use by one decode step.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.core.errors import BundleError
from slimline.deploy.manifest import BundleManifest
from slimline.formats.causal_lm import greedy_generate

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class GeneratedText:
    text: str
    prompt_tokens: int
    new_tokens: int
    prefill_ms: float
    decode_tokens_per_s: float
    finish_reason: str  # "eos" or "length"


class Generator:
    """A text-generation bundle ready to continue prompts greedily."""

    def __init__(self, root: Path, manifest: BundleManifest, threads: int | None = None) -> None:
        from slimline.core.tokenizers import load_tokenizer
        from slimline.deploy.runtime import bundle_runtime
        from slimline.serve.predictor import open_engine

        self.manifest = manifest
        self.threads = threads or manifest.profile.target.threads
        self.session = open_engine(root, manifest, self.threads)
        config_dir = root / manifest.preprocessing
        config = json.loads((config_dir / "config.json").read_text()) if (config_dir / "config.json").is_file() else {}
        decoder = bundle_runtime(manifest.format).make_decoder(self.session, config)  # stateful IRs: their own
        if decoder is None:
            raise BundleError(f"{root}'s engine cannot generate: it has no KV cache (past_key_values inputs or "
                              "an OpenVINO state).",
                              fix="re-export the checkpoint with this slimline (it keeps the KV cache).")
        self.decoder = decoder
        self.tokenizer, _ = load_tokenizer(config_dir)
        self.max_context = int(config.get("max_position_embeddings") or 2048)
        self._lock = threading.Lock()

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def generate(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> GeneratedText:
        with self._lock:
            ids = self.tokenizer(prompt, return_tensors="np")["input_ids"].astype(np.int64)
            if ids.shape[1] == 0:
                ids = np.asarray([[self.tokenizer.bos_token_id or self.tokenizer.eos_token_id or 0]], dtype=np.int64)
            room = self.max_context - ids.shape[1]
            if room < 1:
                raise ValueError(f"the prompt has {ids.shape[1]} tokens; the model's context is {self.max_context}")
            eos = self.tokenizer.eos_token_id
            generation = greedy_generate(self.decoder, ids, None, min(max_new_tokens, room), eos)
            tokens = generation.tokens[0].tolist()
            finished = eos is not None and tokens and tokens[-1] == eos
            text = self.tokenizer.decode(tokens[:-1] if finished else tokens, skip_special_tokens=True)
        return GeneratedText(text=text, prompt_tokens=int(ids.shape[1]), new_tokens=len(tokens),
                             prefill_ms=generation.prefill_ms, decode_tokens_per_s=generation.decode_tokens_per_s(),
                             finish_reason="eos" if finished else "length")
