"""A checkpoint that cannot load (or cannot fit) is refused from its config, headers and tokenizer, in seconds.

Each case edits a copy of a tiny model of a family: BERT and ViT classifiers, GPT-2 and Llama causal LMs. The
checks know no family: what one case finds on BERT, it finds on the others (the parametrized cases).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_tiny_bert, make_tiny_gpt2, make_tiny_llama, make_tiny_vit

from slimline.core.errors import EXIT_BAD_INPUT, CheckpointError
from slimline.formats.sanity import MAX_SIZE, check_checkpoint

FAMILIES: dict[str, tuple[Callable[[Path], Path], str, str, str]] = {
    # name: (builder, task, width field, positions field)
    "bert": (make_tiny_bert, "text-classification", "hidden_size", "max_position_embeddings"),
    "gpt2": (make_tiny_gpt2, "text-generation", "n_embd", "n_positions"),
    "llama": (make_tiny_llama, "text-generation", "hidden_size", "max_position_embeddings"),
    "vit": (make_tiny_vit, "image-classification", "hidden_size", "image_size"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: make(root / name) for name, (make, *_rest) in FAMILIES.items()}


def _copy(built: dict[str, Path], family: str, where: Path) -> Path:
    return Path(shutil.copytree(built[family], where / family))


def _edit(checkpoint: Path, **changes: object) -> None:
    path = checkpoint / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))  # NaN is written as the bare NaN Python's json (and transformers) read


def _refused(checkpoint: Path, task: str, *needles: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        check_checkpoint(checkpoint, task)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    message = " ".join(str(caught.value).split())
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_passes_as_saved(built: dict[str, Path], family: str) -> None:
    check_checkpoint(built[family], FAMILIES[family][1])


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("field", "value", "why"), [
    ("width", 1e9, "beyond any real model"),
    ("positions", 10**12, "beyond any real model"),
    ("width", float("nan"), "not a whole number"),
    ("width", 32.5, "not a whole number"),
    ("width", -5, "negative size"),
])
def test_absurd_sizes_are_refused_naming_the_field(built: dict[str, Path], tmp_path: Path, family: str, field: str,
                                                   value: float, why: str) -> None:
    _, task, width, positions = FAMILIES[family]
    name = width if field == "width" else positions
    checkpoint = _copy(built, family, tmp_path)
    _edit(checkpoint, **{name: value})
    _refused(checkpoint, task, "config.json", name, why)


@pytest.mark.parametrize("family", ["bert", "vit"])
@pytest.mark.parametrize(("changes", "why"), [
    ({"id2label": {}, "label2id": {}}, "1 to"),
    ({"num_labels": 0, "id2label": None, "label2id": None}, "1 to"),
    ({"num_labels": 7}, "num_labels is 7, but id2label names"),
    ({"id2label": {"0": "a", "2": "b"}}, "class ids 0..1"),
    ({"id2label": {"0": "same", "1": "same"}}, "distinct strings"),
])
def test_a_classifier_without_sensible_labels_is_refused(built: dict[str, Path], tmp_path: Path, family: str,
                                                         changes: dict, why: str) -> None:
    checkpoint = _copy(built, family, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (checkpoint / "config.json").write_text(json.dumps(config))
    _refused(checkpoint, FAMILIES[family][1], why)


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_id2label_disagreeing_with_the_head_names_the_tensor(built: dict[str, Path], tmp_path: Path,
                                                             family: str) -> None:
    checkpoint = _copy(built, family, tmp_path)
    labels = json.loads((checkpoint / "config.json").read_text())["id2label"]
    more = {str(i): f"class-{i}" for i in range(len(labels) + 1)}
    _edit(checkpoint, id2label=more, label2id={v: int(k) for k, v in more.items()})
    _refused(checkpoint, FAMILIES[family][1], "classifier.weight", f"{len(more)} classes", "do not match")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_config_that_disagrees_with_the_weights_is_refused_for_a_causal_lm(built: dict[str, Path], tmp_path: Path,
                                                                            family: str) -> None:
    task = FAMILIES[family][1]
    checkpoint = _copy(built, family, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    _edit(checkpoint, vocab_size=config["vocab_size"] + 3)
    _refused(checkpoint, task, "do not match", "in the weights")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_model_larger_than_this_machines_ram_is_refused_with_the_estimate(built: dict[str, Path], tmp_path: Path,
                                                                          family: str) -> None:
    """Within every per-field bound, but far beyond any machine: refused from the meta-device estimate."""
    _, task, width, _ = FAMILIES[family]
    checkpoint = _copy(built, family, tmp_path)
    big = MAX_SIZE // 4  # 4 M wide: the embeddings alone are tens of GiB, the layers hundreds of TiB
    changes: dict[str, object] = {width: big}
    if family == "llama":
        changes["head_dim"] = big // 4
    _edit(checkpoint, **changes)
    _refused(checkpoint, task, "GiB of fp32 parameters", "nothing allocated", "GiB of RAM")


def test_a_malformed_tokenizer_json_is_refused_naming_the_tokenizer(built: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = _copy(built, "bert", tmp_path)
    tokenizer = checkpoint / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:100])  # cut off: "EOF while parsing"
    _refused(checkpoint, "text-classification", "tokenizer", "cannot be loaded", "tokenizer.json")


def test_a_layer_or_expert_explosion_is_refused_before_anything_is_built(built: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    checkpoint = _copy(built, "llama", tmp_path)
    _edit(checkpoint, num_hidden_layers=1000, num_local_experts=4000)
    _refused(checkpoint, "text-generation", "expert blocks")
    _edit(checkpoint, num_hidden_layers=5000, num_local_experts=1)
    _refused(checkpoint, "text-generation", "num_hidden_layers", "at most 1,024")


def test_probabilities_ids_and_the_unset_sentinel_are_not_sizes(built: dict[str, Path], tmp_path: Path) -> None:
    """Numbers that only look like sizes by name pass: dropouts, token ids, eps, rope factors, -1 (unset)."""
    checkpoint = _copy(built, "bert", tmp_path)
    _edit(checkpoint, hidden_dropout_prob=0.37, pad_token_id=0, layer_norm_eps=1e-12, max_relative_positions=-1,
          rope_scaling={"factor": 2.5, "original_max_position_embeddings": 128}, dropout_positions=0.1)
    check_checkpoint(checkpoint, "text-classification")


def test_compress_which_may_load_quantized_is_not_refused_by_the_fp32_estimate(built: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    """bitsandbytes passes load 4-bit: `compress` skips the fp32 RAM check (the weights still must match)."""
    checkpoint = _copy(built, "bert", tmp_path)
    _edit(checkpoint, hidden_size=MAX_SIZE // 4)
    with pytest.raises(CheckpointError) as caught:
        check_checkpoint(checkpoint, "text-classification", fp32_must_fit=False)
    assert "GiB of RAM" not in str(caught.value) and "do not match" in str(caught.value)
