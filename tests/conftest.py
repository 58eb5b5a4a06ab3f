"""Shared fixtures: tiny models built from configs with seeded random weights, and CLI helpers."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORDS = ["the", "a", "film", "movie", "good", "bad", "great", "boring", "fun", "plot", "cast", "not", "was", "is",
         "and", "of", "to", "it", "never", "lands", "beautifully", "shot", "two", "hours", "life", "back", "ending"]


def pytest_configure(config: pytest.Config) -> None:
    """Runs the tests start record into a throw-away results history, never the user's own."""
    import tempfile

    os.environ["SLIMLINE_HISTORY"] = str(Path(tempfile.mkdtemp(prefix="slimline-test-history-")) / "history.sqlite")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (the real demo checkpoint)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--slow") or "slow" in (config.getoption("-m") or "")
    if not run_slow:
        skip = pytest.mark.skip(reason="slow: runs the real demo checkpoint; enable with --slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip_gpu = pytest.mark.skip(reason="gpu: no CUDA device visible to torch on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


def _write_tokenizer(path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)


def make_tiny_bert(path: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A 2-layer BERT sequence classifier (hidden 32) with a real word-level tokenizer.

    With the default initializer_range the outputs barely depend on the input; 0.2 gives a model
    whose predictions vary enough for accuracy tests to mean something.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(path)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1},
                        initializer_range=initializer_range)
    BertForSequenceClassification(config).eval().save_pretrained(path, safe_serialization=True)
    return path


def make_tiny_gpt2(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=128)
    GPT2LMHeadModel(config).eval().save_pretrained(path, safe_serialization=True)
    return path


def make_tiny_vit(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3)
    ViTForImageClassification(config).eval().save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def on_sys_path() -> Iterator[Callable[[Path], None]]:
    """Make a folder importable (a user's factory module) for one test, and take back only that entry.

    Not monkeypatch.syspath_prepend: it restores the whole of sys.path afterwards, which also drops what a library
    appended while the test ran. onnxruntime.transformers appends its own folder when first imported (its
    optimizer then imports `fusion_options` as a top-level module), so every later test of the session failed
    with "No module named 'fusion_options'"."""
    added: list[str] = []

    def add(path: Path) -> None:
        sys.path.insert(0, str(path))
        importlib.invalidate_caches()
        added.append(str(path))

    yield add
    for entry in added:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_sys_path: Callable[[Path], None]) -> Path:
    """A user's working folder: the current directory, importable (their factory modules), with its own cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path / "cache"))
    on_sys_path(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2") / "model")


def _write_padless_tokenizer(path: Path) -> None:
    """A word-level tokenizer with BOS/EOS/UNK and, like Llama's, no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", *WORDS, ".", ","])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path)


def make_tiny_llama(path: Path, seed: int = 0, layers: int = 4) -> Path:
    """A 4-layer Llama causal LM (hidden 48 != vocab 32) with grouped-query attention (4 query heads over
    2 KV heads), tied embeddings, and a tokenizer without a pad token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    _write_padless_tokenizer(path)
    config = LlamaConfig(vocab_size=len(WORDS) + 5, hidden_size=48, intermediate_size=96, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, initializer_range=0.2)
    LlamaForCausalLM(config).eval().save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_vit(tmp_path_factory.mktemp("tiny-vit") / "model")


@pytest.fixture(scope="session")
def labelled_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled text file in the tiny tokenizer's vocabulary (labels neg/pos)."""
    import random

    rng = random.Random(0)
    rows = ["text,label"]
    for _ in range(60):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        rows.append(f"{words},{rng.choice(['neg', 'pos'])}")
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def fast_profile(tmp_path: Path) -> Path:
    """The cpu profile with a short measurement, so end-to-end tests on tiny models take seconds."""
    path = tmp_path / "fast-cpu.yaml"
    path.write_text((REPO / "tests" / "fixtures" / "fast-cpu.yaml").read_text())
    return path


def slimline_script() -> str:
    """The installed `slimline` console script (beside this interpreter), as a user runs it."""
    script = Path(sys.executable).with_name("slimline")
    if not script.is_file():
        found = shutil.which("slimline")
        if found is None:
            pytest.fail("the `slimline` console script is not installed: run scripts/install.sh")
        return found
    return str(script)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `slimline` console script in a subprocess, as a user would."""
    return subprocess.run([slimline_script(), *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {}), "COLUMNS": "200"}, check=False,
                          timeout=timeout_s)
