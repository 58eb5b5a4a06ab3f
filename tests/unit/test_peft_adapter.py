"""LoRA / PEFT adapters: validation against the base (cheap, before any model loads) and the proven merge."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_bert, make_tiny_gpt2
from peft_adapter import make_lora_adapter

from slimline.core.errors import CheckpointError, MissingDependency, PassError
from slimline.formats.adapter import merge_adapter, open_adapter, shape_problems
from slimline.pipeline.adapter import merge_stage, open_source


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("lora-base") / "base", initializer_range=0.2)


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_adapter(base, tmp_path_factory.mktemp("lora") / "adapter")


def _copy(adapter: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(adapter, tmp_path / "adapter-copy"))


def _peft_logits(base: Path, adapter: Path, input_ids: np.ndarray) -> np.ndarray:
    """base + adapter as peft runs them, unmerged: the reference a merge must reproduce."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), str(adapter)).eval()
    with torch.inference_mode():
        return model(input_ids=torch.from_numpy(input_ids)).logits.numpy()


def test_merged_checkpoint_reproduces_base_plus_adapter_logits(base: Path, adapter: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    check = merge_adapter(open_adapter(adapter, base), tmp_path)
    assert check["max_abs_diff"] <= check["tolerance"]
    assert check["adapter_effect_max_abs"] > 100 * check["tolerance"], "the trained adapter must change the logits"
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "adapter_config.json").exists(), "the merged checkpoint is a plain checkpoint"
    input_ids = np.random.default_rng(3).integers(5, 30, size=(4, 10))
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.inference_mode():
        actual = merged(input_ids=torch.from_numpy(input_ids)).logits.numpy()
    np.testing.assert_allclose(actual, _peft_logits(base, adapter, input_ids), atol=1e-4)


def test_a_merge_that_loses_the_adapter_fails_loudly(base: Path, adapter: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from peft.tuners.lora import LoraModel

    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, **kwargs: self.unload())  # drops the deltas
    with pytest.raises(PassError, match="does not reproduce base \\+ adapter"):
        merge_adapter(open_adapter(adapter, base), tmp_path)


def test_merge_stage_is_content_addressed_and_reused(base: Path, adapter: Path, tmp_path: Path) -> None:
    source, found = open_source(adapter, base, None)
    assert found is not None and source.path == base
    final = tmp_path / "00-merge.peft-x"
    merged, record = merge_stage(found, final)
    assert not record.reused
    step = merged.manifest.lineage[0]
    assert (step.kind, step.name) == ("source", "peft-adapter")
    assert step.config["adapter"]["files_sha256"]["adapter_model.safetensors"] == found.files_sha256[
        "adapter_model.safetensors"]
    assert step.config["base"]["files_sha256"] == found.base.manifest.files and step.config["base"]["sha256"]
    assert step.config["path"] == str(final.resolve())
    again, record = merge_stage(found, final)
    assert record.reused and again.manifest_sha256 == merged.manifest_sha256


def test_the_base_named_in_adapter_config_is_used_when_it_is_a_local_path(base: Path, adapter: Path,
                                                                         tmp_path: Path) -> None:
    copy = _copy(adapter, tmp_path)
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    assert open_adapter(copy).base.path == base


@pytest.mark.parametrize("named", ["prajjwal1/bert-tiny", "bert-base-uncased"])
def test_a_hub_id_as_base_is_refused_with_the_base_flag_as_fix(adapter: Path, tmp_path: Path, named: str) -> None:
    copy = _copy(adapter, tmp_path)
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": named}))
    with pytest.raises(CheckpointError, match=r"Hub id.*never downloads(.|\n)*fix: .*--base"):
        open_adapter(copy)


def test_a_base_with_other_widths_is_refused_before_loading(adapter: Path, tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    other = tmp_path / "wide"
    BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64)).save_pretrained(other)
    with pytest.raises(CheckpointError, match=r"does not fit the base(.|\n)*lora_A.weight has shape \[4, 32\]"):
        open_adapter(adapter, other)


def test_a_base_of_another_architecture_is_refused(adapter: Path, tmp_path: Path) -> None:
    gpt2 = make_tiny_gpt2(tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match="the base has no module"):
        open_adapter(adapter, gpt2, task="text-classification")


@pytest.mark.parametrize("damage", ["missing", "truncated", "config"])
def test_a_damaged_adapter_is_refused(adapter: Path, base: Path, tmp_path: Path, damage: str) -> None:
    copy = _copy(adapter, tmp_path)
    weights = copy / "adapter_model.safetensors"
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:40])
    else:
        (copy / "adapter_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"no weights|not a readable safetensors|not valid JSON"):
        open_adapter(copy, base)


def test_base_without_an_adapter_is_refused(base: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not a PEFT adapter directory(.|\n)*fix: drop --base"):
        open_source(base, base, None)


def test_prompt_tuning_adapters_are_refused_as_unmergeable(adapter: Path, base: Path, tmp_path: Path) -> None:
    copy = _copy(adapter, tmp_path)
    (copy / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING", "task_type": "SEQ_CLS"}))
    with pytest.raises(CheckpointError, match="nothing to merge"):
        open_adapter(copy, base)


def test_shape_check_matches_a_base_saved_without_its_head_prefix() -> None:
    adapter = {"base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight": [4, 32],
               "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight": [32, 4]}
    headless = {"encoder.layer.0.attention.self.query.weight": [32, 32]}
    assert shape_problems(adapter, headless) == []
    narrower = {"encoder.layer.0.attention.self.query.weight": [16, 32]}
    assert shape_problems(adapter, narrower) == [
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight has shape [32, 4], which does "
        "not fit the base's encoder.layer.0.attention.self.query.weight [16, 32]"]


def test_without_peft_the_error_names_the_install_line(adapter: Path, base: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError, find_spec finds nothing
    with pytest.raises(MissingDependency, match=r"needs peft(.|\n)*fix: pip install 'slimline\[peft\]'"):
        open_adapter(adapter, base)


def test_compress_merges_the_adapter_into_the_cache_before_the_passes(base: Path, adapter: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline

    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path / "cache"))
    model = slimline.compress(adapter, base=base, recipe=[{"pass": "prune.layers", "with": {"keep": [0]}}],
                              out=tmp_path / "pruned")
    source, step = model.manifest.lineage
    assert (source.name, step.name) == ("peft-adapter", "prune.layers")
    assert Path(source.config["path"]).parent == tmp_path / "cache" / "merged-adapters"
    assert json.loads((model.path / "config.json").read_text())["num_hidden_layers"] == 1


def test_a_missing_base_directory_is_named_as_the_base(adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"--base .*missing is not a directory"):
        open_adapter(adapter, tmp_path / "missing")


def test_a_causal_lm_adapter_on_gpt2_conv1d_weights_merges(tmp_path: Path) -> None:
    """GPT-2 stores its projections as Conv1D (in, out): the shape check must follow peft's fan_in_fan_out."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    gpt2 = make_tiny_gpt2(tmp_path / "gpt2")
    torch.manual_seed(0)
    config = LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["c_attn"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(gpt2), config).save_pretrained(tmp_path / "adapter")
    adapter = open_adapter(tmp_path / "adapter", gpt2)
    assert adapter.task == "text-generation" and adapter.config["fan_in_fan_out"] is True
    check = merge_adapter(adapter, tmp_path / "merged")
    assert check["max_abs_diff"] <= check["tolerance"] < check["adapter_effect_max_abs"]
