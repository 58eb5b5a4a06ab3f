"""Decoder LLMs with a KV cache: one prefill/decode interface over ONNX Runtime and PyTorch eager.

The ONNX graph is optimum's `text-generation-with-past` export: inputs `input_ids`,
`attention_mask`, `position_ids` and `past_key_values.{i}.key/value`, outputs `logits` and
`present.{i}.key/value`. A prefill is that graph with an empty past (sequence axis 0); each decode
step feeds one token and the previous step's presents. The PyTorch side is the same model in eager
fp32 with transformers' own `DynamicCache`: the baseline a team would run without slimline.

Export parity, the benchmark (prefill latency, decode tokens/s), the perplexity evaluator and the
server's generation endpoint all go through this module, so they measure one and the same loop.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from slimline.core.artifact import TensorSpec

PAST_INPUT = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_NUMPY = {"float32": np.float32, "float16": np.float16}


def is_past_input(name: str) -> bool:
    return PAST_INPUT.match(name) is not None


def has_kv_cache(inputs: list[TensorSpec]) -> bool:
    return any(is_past_input(spec.name) for spec in inputs)


def past_shape(spec: TensorSpec, config: dict[str, Any], batch: int) -> tuple[int, int, int, int]:
    """(batch, kv heads, 0, head dim) for an empty past; the graph's fixed dims, else the model config's."""
    heads = spec.shape[1] if len(spec.shape) == 4 and isinstance(spec.shape[1], int) else None
    head_dim = spec.shape[3] if len(spec.shape) == 4 and isinstance(spec.shape[3], int) else None
    if heads is None:
        heads = int(config.get("num_key_value_heads") or config.get("num_attention_heads") or config["n_head"])
    if head_dim is None:
        attention_heads = int(config.get("num_attention_heads") or config["n_head"])
        head_dim = int(config.get("head_dim") or int(config.get("hidden_size") or config["n_embd"]) // attention_heads)
    return batch, heads, 0, head_dim


def empty_past(specs: list[TensorSpec], config: dict[str, Any], batch: int) -> dict[str, np.ndarray]:
    """Zero-length past tensors for every past input: the graph then computes a plain prefill."""
    return {spec.name: np.zeros(past_shape(spec, config, batch), dtype=_NUMPY.get(spec.dtype, np.float32))
            for spec in specs if is_past_input(spec.name)}


def positions_from_mask(attention_mask: np.ndarray, past_length: int = 0) -> np.ndarray:
    """Position ids that skip padding (as transformers' generate computes them), offset by the cached length."""
    positions = np.cumsum(attention_mask, axis=-1) - 1
    positions = np.where(attention_mask == 0, 1, positions)
    return positions[:, past_length:].astype(np.int64)


class Decoder(Protocol):
    """Prefill a prompt, then extend it one token at a time from the cache."""

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, Any]:
        """Logits of every prompt position (batch, seq, vocab) and the cache state."""
        ...

    def step(self, token_ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Logits of the new position (batch, vocab) after appending `token_ids` (batch,)."""
        ...


@dataclass
class _OrtState:
    past: dict[str, np.ndarray]
    attention_mask: np.ndarray


class OrtDecoder:
    """A `text-generation-with-past` ONNX Runtime session driven as prefill + decode steps."""

    def __init__(self, session: Any, config: dict[str, Any]) -> None:
        self.session = session
        self.config = config
        self.inputs = [TensorSpec(name=i.name, dtype={"tensor(float16)": "float16"}.get(i.type, "float32")
                                  if is_past_input(i.name) else "int64", shape=list(i.shape))
                       for i in session.get_inputs()]
        self.input_names = {spec.name for spec in self.inputs}
        self.output_names = [o.name for o in session.get_outputs()]
        if not has_kv_cache(self.inputs):
            raise ValueError("the ONNX model has no past_key_values inputs: export it with the KV cache "
                             "(text-generation-with-past)")

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray, past: dict[str, np.ndarray],
             past_length: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64), **past}
        if "position_ids" in self.input_names:
            feeds["position_ids"] = positions_from_mask(attention_mask, past_length)
        outputs = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})
        presents = {name.replace("present", "past_key_values", 1): value
                    for name, value in zip(self.output_names, outputs, strict=True) if name.startswith("present")}
        return outputs[0], presents

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, _OrtState]:
        past = empty_past(self.inputs, self.config, input_ids.shape[0])
        logits, presents = self._run(input_ids, attention_mask, past, 0)
        return logits, _OrtState(presents, attention_mask.astype(np.int64))

    def step(self, token_ids: np.ndarray, state: _OrtState) -> tuple[np.ndarray, _OrtState]:
        past_length = state.attention_mask.shape[1]
        mask = np.concatenate([state.attention_mask, np.ones((len(token_ids), 1), dtype=np.int64)], axis=1)
        logits, presents = self._run(token_ids.reshape(-1, 1), mask, state.past, past_length)
        return logits[:, -1], _OrtState(presents, mask)


class TorchDecoder:
    """A transformers causal LM in eager mode with its own DynamicCache (the fp32 baseline)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device

    def _forward(self, input_ids: Any, attention_mask: Any, past: Any, past_length: int) -> tuple[np.ndarray, Any]:
        torch = self.torch
        mask_np = attention_mask
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids.astype(np.int64)).to(self.device),
                             attention_mask=torch.from_numpy(mask_np.astype(np.int64)).to(self.device),
                             position_ids=torch.from_numpy(positions_from_mask(mask_np, past_length)).to(self.device),
                             past_key_values=past, use_cache=True)
        return out.logits.float().cpu().numpy(), out.past_key_values

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, Any]:
        from transformers import DynamicCache

        logits, cache = self._forward(input_ids, attention_mask, DynamicCache(), 0)
        return logits, (cache, attention_mask.astype(np.int64))

    def step(self, token_ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        cache, mask = state
        past_length = mask.shape[1]
        mask = np.concatenate([mask, np.ones((len(token_ids), 1), dtype=np.int64)], axis=1)
        logits, cache = self._forward(token_ids.reshape(-1, 1), mask, cache, past_length)
        return logits[:, -1], (cache, mask)


@dataclass
class Generation:
    """Greedy tokens and where the time went: the prefill apart from each decode step."""

    tokens: np.ndarray  # (batch, new_tokens)
    prefill_ms: float
    step_ms: list[float] = field(default_factory=list)

    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second over the decode steps (the first token comes from the prefill)."""
        total_s = sum(self.step_ms) / 1000.0
        return self.tokens.shape[0] * len(self.step_ms) / total_s if total_s > 0 else 0.0


def greedy_generate(decoder: Decoder, input_ids: np.ndarray, attention_mask: np.ndarray | None,
                    new_tokens: int, eos_token_id: int | None = None) -> Generation:
    """Greedy decoding with the cache; stops early only when every row has produced EOS."""
    mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
    started = time.perf_counter_ns()
    logits, state = decoder.prefill(input_ids, mask)
    token = logits[:, -1].argmax(-1)
    prefill_ms = (time.perf_counter_ns() - started) / 1e6
    tokens, step_ms = [token], []
    done = token == eos_token_id if eos_token_id is not None else np.zeros_like(token, dtype=bool)
    for _ in range(new_tokens - 1):
        if done.all():
            break
        started = time.perf_counter_ns()
        logits, state = decoder.step(token, state)
        token = logits.argmax(-1)
        step_ms.append((time.perf_counter_ns() - started) / 1e6)
        tokens.append(token)
        if eos_token_id is not None:
            done |= token == eos_token_id
    return Generation(np.stack(tokens, axis=1), prefill_ms, step_ms)
