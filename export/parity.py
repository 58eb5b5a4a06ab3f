"""Parity between an exported ONNX model and the PyTorch model it came from, on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.artifact import TensorSpec
from slimline.core.data import DatasetSpec, load_dataset
from slimline.core.errors import ExportError, SlimlineError
from slimline.core.tokenizers import load_tokenizer
from slimline.formats.causal_lm import (
    OrtDecoder,
    TorchDecoder,
    empty_past,
    greedy_generate,
    has_kv_cache,
    is_past_input,
    positions_from_mask,
)
from slimline.formats.hf import load_hf_model
from slimline.formats.inputs import synthetic_feeds
from slimline.profiles.schema import Shape

#: Real sentences used for text models that ship a tokenizer, padded into one batch.
PARITY_SENTENCES = [
    "A gripping, beautifully shot film with a cast that never hits a false note.",
    "Two hours of my life I will never get back.",
    "The plot wobbles in the middle, but the ending lands.",
    "Not bad.",
]


#: Examples every export is checked on (at least): real eval texts where the checkpoint names its data, the
#: sentences above, then seeded synthetic inputs to make up the count.
PARITY_EXAMPLES = 64
PARITY_BATCH = 16


def _eval_texts(source: Path, count: int) -> list[str]:
    """Up to `count` texts of the validation split of the data the checkpoint names (its manifest's eval_data
    hint: the demo's Rotten Tomatoes); none when it names none or the data cannot be read here."""
    manifest_path = source / "manifest.json"
    try:
        hint = json.loads(manifest_path.read_text()).get("metadata", {}).get("eval_data")
        if not hint:
            return []
        spec = DatasetSpec.model_validate({**hint, "split": "validation", "max_samples": count})
        return load_dataset(spec).texts[:count]
    except (OSError, ValueError, SlimlineError):  # parity then runs on the sentences and synthetic inputs
        return []


def _text_batches(source: Path, inputs: list[TensorSpec], config: dict[str, Any],
                  want: int) -> tuple[list[dict[str, np.ndarray]], str | None, str]:
    """Real texts padded into batches, when the model ships a tokenizer that can pad, else none."""
    if not (source / "tokenizer_config.json").is_file():
        return [], None, ""
    tokenizer, padding_note = load_tokenizer(source)
    if tokenizer.pad_token is None:
        return [], "the tokenizer has no pad, EOS or UNK token: parity checked on random ids only", ""
    eval_texts = _eval_texts(source, want)
    texts = [*eval_texts, *PARITY_SENTENCES][:max(want, len(PARITY_SENTENCES))]
    names = {spec.name for spec in inputs}
    positions = config.get("max_position_embeddings") or config.get("n_positions") or 128
    batches = []
    for start in range(0, len(texts), PARITY_BATCH):
        encoded = tokenizer(texts[start:start + PARITY_BATCH], padding=True, truncation=True,
                            max_length=min(128, int(positions)), return_tensors="np")
        real = {name: encoded[name].astype(np.int64) for name in names if name in encoded}
        if "position_ids" in names and "attention_mask" in real:
            real["position_ids"] = positions_from_mask(real["attention_mask"])
        real.update(empty_past(inputs, config, len(encoded["input_ids"])))
        if set(real) != names:
            return [], padding_note, ""
        batches.append(real)
    origin = f"{len(eval_texts)} validation texts of the checkpoint's eval data, " if eval_texts else ""
    return batches, padding_note, origin + f"{len(texts) - len(eval_texts)} built-in sentences"


def _parity_feeds(source: Path, task: str,
                  inputs: list[TensorSpec]) -> tuple[list[dict[str, np.ndarray]], str | None, str]:
    """Batches of at least PARITY_EXAMPLES examples, the note on padding, and where the examples came from.

    Text models that ship a tokenizer get real texts padded into batches (the checkpoint's own eval data
    where it names some); every model gets seeded synthetic inputs up to the count. A tokenizer without
    a pad token pads with EOS (masked; see slimline.core.tokenizers): the note says so. Decoder exports
    with a KV cache get position ids and an empty past.
    """
    config = json.loads((source / "config.json").read_text())
    feeds: list[dict[str, np.ndarray]] = []
    padding_note, origin = None, ""
    if task != "image-classification":
        feeds, padding_note, origin = _text_batches(source, inputs, config, PARITY_EXAMPLES)
    examples = sum(_batch_size(batch) for batch in feeds)
    batch = 8 if task == "image-classification" else PARITY_BATCH
    seed, synthetic = 1, 0
    while examples < PARITY_EXAMPLES:
        size = min(batch, PARITY_EXAMPLES - examples)
        feed = synthetic_feeds(inputs, Shape(batch_size=size, sequence_length=24), config, seed=seed)
        feeds.append(feed)
        examples += _batch_size(feed)
        synthetic += _batch_size(feed)
        seed += 1
    origin = ", ".join(part for part in (origin, f"{synthetic} synthetic inputs" if synthetic else "") if part)
    return feeds, padding_note, origin


def _batch_size(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


def check_parity(source: Path, task: str, onnx_path: Path, inputs: list[TensorSpec],
                 atol: float, min_agreement: float) -> dict[str, Any]:
    """Compare ONNX Runtime (CPU) and PyTorch outputs on PARITY_EXAMPLES examples or more; raise ExportError
    when outside tolerance."""
    import onnxruntime as ort
    import torch

    model = load_hf_model(source, task)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst_diff, agree, total, examples = 0.0, 0, 0, 0
    all_feeds, padding_note, origin = _parity_feeds(source, task, inputs)
    for feeds in all_feeds:
        with torch.inference_mode():  # an empty past is the same as none: torch gets no cache
            torch_feeds = {k: torch.from_numpy(v) for k, v in feeds.items() if not is_past_input(k)}
            expected = model(**torch_feeds)[0].float().numpy()  # logits, or an encoder's last_hidden_state
        actual = session.run(None, feeds)[0]
        if actual.shape != expected.shape:
            raise ExportError(f"exported model's output shape {actual.shape} differs from PyTorch's {expected.shape}.",
                              fix="the export traced a different graph; try exporter: torch or another opset.")
        mask = feeds.get("attention_mask")
        if mask is not None and expected.ndim == 3 and expected.shape[:2] == mask.shape:
            # Per-token outputs: padded positions attend to nothing (fully masked rows), so each
            # runtime fills them differently; only real tokens' outputs are compared.
            actual, expected = actual[mask.astype(bool)], expected[mask.astype(bool)]
        worst_diff = max(worst_diff, float(np.max(np.abs(actual.astype(np.float64) - expected))))
        agree += int((actual.argmax(-1) == expected.argmax(-1)).sum())
        total += int(np.prod(expected.shape[:-1]))
        examples += _batch_size(feeds)
    agreement = agree / total
    result = {"max_abs_diff": worst_diff, "argmax_agreement": agreement, "atol": atol,
              "min_agreement": min_agreement, "compared_predictions": total, "examples": examples,
              "examples_from": origin}
    if padding_note:
        result["padding"] = padding_note
    if has_kv_cache(inputs):
        result["decode"] = _decode_parity(model, session, source, inputs)
        agreement = min(agreement, result["decode"]["token_agreement"])
        worst_diff = max(worst_diff, result["decode"]["max_abs_diff"])
    if worst_diff > atol or agreement < min_agreement:
        raise ExportError(
            f"ONNX export does not match PyTorch: max |diff| = {worst_diff:.3g} (tolerance {atol:g}), "
            f"argmax agreement = {agreement:.3f} (required {min_agreement:g}) over {total} predictions on "
            f"{examples} examples.",
            fix="try another opset or exporter; if the difference is expected, raise parity_atol in the export config.",
        )
    return result


DECODE_PARITY_TOKENS = 8


def _decode_parity(model: Any, session: Any, source: Path, inputs: list[TensorSpec]) -> dict[str, Any]:
    """Greedy decoding from the KV cache, ONNX Runtime against PyTorch's own cache, token by token.

    The prefill comparison above cannot catch a cache that is written or read wrongly (wrong
    positions, a transposed present): only steps that read the past do.
    """
    config = json.loads((source / "config.json").read_text())
    prompt = synthetic_feeds([s for s in inputs if s.name == "input_ids"], Shape(batch_size=2, sequence_length=12),
                             config, seed=2)["input_ids"]
    ours = greedy_generate(OrtDecoder(session, config), prompt, None, DECODE_PARITY_TOKENS)
    theirs = greedy_generate(TorchDecoder(model), prompt, None, DECODE_PARITY_TOKENS)
    # Compare the step logits on the reference's tokens, so one early flip does not cascade.
    ort_decoder, torch_decoder = OrtDecoder(session, config), TorchDecoder(model)
    mask = np.ones_like(prompt)
    _, ort_state = ort_decoder.prefill(prompt, mask)
    _, torch_state = torch_decoder.prefill(prompt, mask)
    worst = 0.0
    for column in range(theirs.tokens.shape[1] - 1):
        token = theirs.tokens[:, column]
        ort_logits, ort_state = ort_decoder.step(token, ort_state)
        torch_logits, torch_state = torch_decoder.step(token, torch_state)
        worst = max(worst, float(np.max(np.abs(ort_logits.astype(np.float64) - torch_logits))))
    agreement = float(np.mean(ours.tokens == theirs.tokens))
    return {"steps": DECODE_PARITY_TOKENS, "max_abs_diff": worst, "token_agreement": agreement}
