"""Prefill + decode steps on a stateful OpenVINO decoder: the KV cache never leaves the infer request.

The same `Decoder` interface as slimline.formats.causal_lm's OrtDecoder (the benchmark's decode timing,
`serve`'s generator and the decode parity all drive it through greedy_generate), but a step feeds only
the new token, its attention mask and position: the cache is the request's state. The state is reset at
every prefill, so two generations never see each other's cache. One infer request, the session's: its lock
is held per call, and a generation must not interleave with another on the same session (the server's
generator holds its own lock for a whole generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimline.runtimes.openvino.session import OpenVINOSession


@dataclass
class _Position:
    attention_mask: np.ndarray  # (batch, tokens so far): the cache's length is its width


class StatefulDecoder:
    def __init__(self, session: OpenVINOSession) -> None:
        if not session.stateful:
            raise ValueError("the OpenVINO model has no state: it is not a stateful KV-cache decoder")
        self.session = session
        self.request = session.request

    def _infer(self, input_ids: np.ndarray, attention_mask: np.ndarray, past_length: int, reset: bool) -> np.ndarray:
        feeds = self.session.stateful_feeds({"input_ids": input_ids.astype(np.int64),
                                             "attention_mask": attention_mask.astype(np.int64)}, past_length)
        with self.session._lock:
            if reset:
                self.request.reset_state()
            self.request.infer(feeds)
            return np.array(self.request.get_output_tensor(0).data)  # a copy: the next infer reuses the buffer

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, _Position]:
        logits = self._infer(input_ids, attention_mask, 0, reset=True)
        return logits, _Position(attention_mask.astype(np.int64))

    def step(self, token_ids: np.ndarray, state: _Position) -> tuple[np.ndarray, _Position]:
        past_length = state.attention_mask.shape[1]
        mask = np.concatenate([state.attention_mask, np.ones((len(token_ids), 1), dtype=np.int64)], axis=1)
        logits = self._infer(token_ids.reshape(-1, 1), mask, past_length, reset=False)
        return logits[:, -1], _Position(mask)
