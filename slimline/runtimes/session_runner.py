"""What the session-based runners share (ONNX Runtime, OpenVINO): feeds trimmed to the graph's inputs, a
decoder's empty KV cache for a full-sequence forward, and every output but the cache.

Both runtimes expose the same `Session` protocol (slimline.runtimes.base), so one class serves them: a
runtime's runner opens its session and hands it here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slimline.formats.causal_lm import empty_past, is_past_input, positions_from_mask
from slimline.runtimes.base import RunnerSpec, Session


class SessionRunner:
    def __init__(self, spec: RunnerSpec, session: Session) -> None:
        self.session = session
        self.input_names = {i.name for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs() if not o.name.startswith("present")]
        self.threads = spec.threads
        self.runtime_name = spec.runtime  # its registry entry makes the decoder (bench.decode.decoder_for)
        self.kv_inputs = [s for s in spec.inputs if is_past_input(s.name)]  # a decoder exported with its cache
        config_path = Path(spec.model_dir) / "config.json"
        self.config = json.loads(config_path.read_text()) if self.kv_inputs and config_path.is_file() else {}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, self._feeds(feeds))[0]

    def run_outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output in the graph's order, less a decoder's `present` KV cache (not a model output to judge)."""
        return list(self.session.run(self.output_names, self._feeds(feeds)))

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self.kv_inputs and self.kv_inputs[0].name not in feeds:  # a full-sequence forward: empty past
            feeds.update(empty_past(self.kv_inputs, self.config, len(feeds["input_ids"])))
            if "position_ids" in self.input_names and "position_ids" not in feeds:
                feeds["position_ids"] = positions_from_mask(feeds.get("attention_mask",
                                                                      np.ones_like(feeds["input_ids"])))
        return feeds

    def synchronize(self) -> None:
        return None  # both return host arrays from run(): the copy back already synchronises
