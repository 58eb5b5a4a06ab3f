"""A profile whose sequences are longer than a checkpoint's learned position table is refused before any work.

Found by the coverage matrix (docs/coverage.md): `compress` with prune.structured on a RoBERTa whose table has 130
rows (122 usable: positions start after padding index 7) under the `cpu` profile (128 tokens) crashed in the
pruning pre-flight with an IndexError (exit 3), and `run` crashed in ONNX Runtime's Gather at the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from model_zoo import build

import slimline
from slimline.api import as_profile
from slimline.core.errors import ProfileError
from slimline.formats.positions import token_limit
from slimline.formats.sanity import meta_model
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.profiles.schema import Profile


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def _with_shape(profile: str, sequence_length: int) -> Profile:
    shipped = as_profile(profile)
    return shipped.model_copy(update={"shapes": [shipped.shapes[0].model_copy(
        update={"sequence_length": sequence_length})]})


@pytest.mark.parametrize(("family", "tokens", "table"), [
    ("roberta", 122, "roberta.embeddings.position_embeddings"),  # 130 rows after padding index 7
    ("mpnet", 128, "mpnet.embeddings.position_embeddings"),  # 130 rows after its own padding index 1
    ("bert", 128, "bert.embeddings.position_embeddings"),  # no offset
    ("llama", None, None),  # rotary: no table, no limit
    ("modernbert", None, None),  # rotary too
])
def test_the_token_limit_is_read_from_the_module_graph(family: str, tokens: int | None, table: str | None,
                                                       zoo: Path) -> None:
    import json

    path = build(family, zoo / family)
    task = "text-generation" if family == "llama" else "text-classification"
    limit = token_limit(meta_model(path, task), json.loads((path / "config.json").read_text()))
    assert (limit.tokens, limit.table) == (tokens, table) if limit else tokens is None


def test_run_and_compress_refuse_a_sequence_longer_than_the_position_table(zoo: Path, tmp_path: Path) -> None:
    path = build("roberta", zoo / "roberta-run")
    with pytest.raises(ProfileError) as refused:
        plan_run(RunRequest(checkpoint=path, profile=as_profile("cpu"), out_dir=tmp_path / "run"))
    message = str(refused.value)
    assert "feeds 128 tokens (sequence_length 128)" in message and "takes at most 122" in message
    assert "after its padding index 7" in message and "sequence_length to 122 or less" in message
    assert refused.value.exit_code == 2
    recipe = [{"pass": "prune.structured", "with": {"ffn_ratio": 0.5}}]
    with pytest.raises(ProfileError, match="takes at most 122"):
        slimline.compress(path, recipe=recipe, out=tmp_path / "pruned", profile="cpu")
    assert not (tmp_path / "pruned").exists()
    plan_run(RunRequest(checkpoint=path, profile=_with_shape("cpu", 122), out_dir=tmp_path / "run"))  # the fix


def test_a_causal_lm_counts_the_decoded_tokens_too(tmp_path: Path) -> None:
    from conftest import make_tiny_gpt2

    path = make_tiny_gpt2(tmp_path / "gpt2")  # n_positions 128, no padding offset
    with pytest.raises(ProfileError, match=r"feeds 192 tokens \(sequence_length 128 \+ 64 decoded tokens\)"):
        plan_run(RunRequest(checkpoint=path, profile=as_profile("llm-cpu"), out_dir=tmp_path / "run"))
    plan_run(RunRequest(checkpoint=path, profile=_with_shape("llm-cpu", 64), out_dir=tmp_path / "run"))
