"""Opening input checkpoints: every unusable one is refused with CheckpointError before any heavy work."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from slimline.core.errors import EXIT_BAD_INPUT, CheckpointError
from slimline.formats.checkpoint import SUPPORTED_TASKS, infer_task, open_checkpoint


class _RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(marker): what an arbitrary-code pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def bert_copy(tiny_bert: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bert, tmp_path / "bert"))


def _pickle_checkpoint(path: Path) -> Path:
    """A config-only checkpoint directory, for tests that add their own pytorch_model.bin."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert",
                                                  "architectures": ["BertForSequenceClassification"]}))
    return path


def test_a_saved_hf_checkpoint_opens_with_an_in_memory_manifest(tiny_bert: Path) -> None:
    model = open_checkpoint(tiny_bert)
    assert model.manifest.format == "hf"
    assert model.manifest.task == "text-classification"
    assert model.manifest.metadata["model_type"] == "bert"
    assert [step.kind for step in model.manifest.lineage] == ["source"]
    assert "model.safetensors" in model.manifest.files
    assert not (tiny_bert / "manifest.json").exists(), "the user's checkpoint must never be written to"


@pytest.mark.parametrize(("fixture", "task"), [
    ("tiny_bert", "text-classification"), ("tiny_gpt2", "text-generation"), ("tiny_vit", "image-classification"),
])
def test_the_task_is_inferred_from_the_architecture(fixture: str, task: str, request: pytest.FixtureRequest) -> None:
    assert open_checkpoint(request.getfixturevalue(fixture)).manifest.task == task


@pytest.mark.parametrize(("architectures", "task"), [
    (["BertForSequenceClassification"], "text-classification"),
    (["LlamaForCausalLM"], "text-generation"),
    (["GPT2LMHeadModel"], "text-generation"),
    (["ViTForImageClassification"], "image-classification"),
    (["BertModel", "DistilBertForSequenceClassification"], "text-classification"),
    (["MPNetModel"], "feature-extraction"),
    (["BertForMaskedLM"], None),
    ([], None),
    (None, None),
])
def test_infer_task_maps_architecture_suffixes(architectures: list[str] | None, task: str | None) -> None:
    assert infer_task({"architectures": architectures, "vocab_size": 100}) == task


def test_a_bare_encoder_is_an_embedding_model_only_when_it_reads_text() -> None:
    assert infer_task({"architectures": ["XLMRobertaModel"], "vocab_size": 250002}) == "feature-extraction"
    assert infer_task({"architectures": ["ViTModel"], "image_size": 224}) is None


def test_an_explicit_task_overrides_the_inferred_one(tiny_gpt2: Path) -> None:
    assert open_checkpoint(tiny_gpt2, task="text-classification").manifest.task == "text-classification"


def test_an_unsupported_task_is_refused_with_the_supported_ones(tiny_bert: Path) -> None:
    with pytest.raises(CheckpointError, match="not supported") as caught:
        open_checkpoint(tiny_bert, task="translation")
    assert all(task in str(caught.value) for task in SUPPORTED_TASKS)


def test_an_unrecognised_architecture_asks_for_a_task(bert_copy: Path) -> None:
    config = json.loads((bert_copy / "config.json").read_text())
    (bert_copy / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(CheckpointError, match="cannot tell the task") as caught:
        open_checkpoint(bert_copy)
    assert "--task" in str(caught.value)


def test_a_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as caught:
        open_checkpoint(tmp_path / "nope")
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_a_file_instead_of_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        open_checkpoint(tmp_path / "model.safetensors")


def test_a_directory_without_config_json_is_refused(bert_copy: Path) -> None:
    (bert_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        open_checkpoint(bert_copy)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"architectures": ["BertForSequenceClassification"]}'])
def test_an_invalid_config_json_is_refused(bert_copy: Path, text: str) -> None:
    (bert_copy / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        open_checkpoint(bert_copy)


def test_a_non_utf8_config_json_is_refused(bert_copy: Path) -> None:
    (bert_copy / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_checkpoint(bert_copy)


def test_a_checkpoint_without_weights_is_refused(bert_copy: Path) -> None:
    (bert_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights"):
        open_checkpoint(bert_copy)


@pytest.mark.parametrize("garbage", [b"", b"not a safetensors file at all" * 10, b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
def test_a_corrupt_safetensors_file_is_refused(bert_copy: Path, garbage: bytes) -> None:
    (bert_copy / "model.safetensors").write_bytes(garbage)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        open_checkpoint(bert_copy)


def test_a_truncated_safetensors_file_is_refused(bert_copy: Path) -> None:
    weights = bert_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        open_checkpoint(bert_copy)


def test_a_pickle_state_dict_of_tensors_is_accepted(tmp_path: Path) -> None:
    import torch

    checkpoint = _pickle_checkpoint(tmp_path / "ckpt")
    torch.save({"classifier.weight": torch.zeros(2, 4)}, checkpoint / "pytorch_model.bin")
    assert open_checkpoint(checkpoint).manifest.files.keys() == {"config.json", "pytorch_model.bin"}


def test_a_pickle_holding_arbitrary_objects_is_refused_without_running_it(tmp_path: Path) -> None:
    checkpoint = _pickle_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "code-ran"
    import torch

    torch.save({"weight": _RunsCodeWhenUnpickled(marker)}, checkpoint / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"weights_only=True") as caught:
        open_checkpoint(checkpoint)
    assert not marker.exists(), "the pickle's payload ran: the .bin was not loaded with weights_only=True"
    assert "safetensors" in str(caught.value)


def test_a_raw_pickle_that_is_not_a_torch_file_is_refused_without_running_it(tmp_path: Path) -> None:
    checkpoint = _pickle_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "code-ran"
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker), protocol=2))
    with pytest.raises(CheckpointError):
        open_checkpoint(checkpoint)
    assert not marker.exists()


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    import torch

    checkpoint = _pickle_checkpoint(tmp_path / "ckpt")
    torch.save([torch.zeros(2)], checkpoint / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not a state dict"):
        open_checkpoint(checkpoint)


def test_a_slimline_model_directory_is_opened_through_its_manifest(tiny_bert: Path, tmp_path: Path) -> None:
    from slimline.core.artifact import Manifest, new_provenance, write_manifest

    model_dir = Path(shutil.copytree(tiny_bert, tmp_path / "m"))
    write_manifest(model_dir, Manifest(format="hf", task="text-classification", provenance=new_provenance()))
    assert open_checkpoint(model_dir).manifest.task == "text-classification"
    with pytest.raises(CheckpointError, match="contradicts the manifest"):
        open_checkpoint(model_dir, task="text-generation")
    (model_dir / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        open_checkpoint(model_dir)
