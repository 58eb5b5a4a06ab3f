"""Tiny random-init Hugging Face checkpoints of every family slimline claims, built from configs in seconds.

One builder per family, all with the same shape of call (`build(family, path, seed=0) -> path`), so that a
test can sweep families (`@pytest.mark.parametrize("family", TEXT_CLASSIFIERS)`) and the coverage matrix
(docs/coverage.md) can name the same keys. Sizes are the smallest each family's code accepts (hidden 32,
2 layers, 2-4 heads); `initializer_range=0.2` so that predictions depend on the input enough for quality
metrics to see damage. Text models share one word-level vocabulary (tests.conftest.WORDS) through a tokenizer
of the family's own kind where transformers can build it offline, else a BERT WordPiece tokenizer (the model
only sees token ids, so any tokenizer whose ids stay inside `vocab_size` serves).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 2, 64
LABELS = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}, "num_labels": 2}
#: Extra ids above the shared words: special tokens of every tokenizer kind built here.
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<pad>", "<unk>", "<mask>"]


def _words() -> list[str]:
    from conftest import WORDS

    return WORDS


def vocab_size() -> int:
    return len(SPECIAL) + len(_words())


def _wordpiece_tokenizer(path: Path, token_types: bool = True) -> None:
    """BERT's WordPiece over the shared words; families without segment embeddings (DistilBERT, MPNet) get
    a tokenizer that, like theirs, returns no token_type_ids."""
    from transformers import BertTokenizerFast

    vocab = path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL, *_words()]) + "\n")
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    BertTokenizerFast(vocab_file=str(vocab), model_input_names=names).save_pretrained(path)


def _wordlevel_tokenizer(path: Path, *, bos: str, eos: str, pad: str | None, unk: str) -> None:
    """A word-level fast tokenizer with the given special tokens (decoder LLMs: no pad token, like Llama)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL, *_words()])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs: dict[str, Any] = {"bos_token": bos, "eos_token": eos, "unk_token": unk}
    if pad is not None:
        kwargs["pad_token"] = pad
    PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs).save_pretrained(path)


def _save(model_cls: Any, config: Any, path: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    model_cls(config).eval().save_pretrained(path, safe_serialization=True)
    return path


def _encoder(config_name: str, model_name: str, token_types: bool = True,
             **overrides: Any) -> Callable[[Path, int], Path]:
    """A sequence classifier of one encoder family with the shared small sizes (overrides per family)."""

    def build(path: Path, seed: int) -> Path:
        import transformers

        path.mkdir(parents=True, exist_ok=True)
        _wordpiece_tokenizer(path, token_types)
        sizes = {"vocab_size": vocab_size(), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
                 "num_attention_heads": HEADS, "intermediate_size": FFN, "max_position_embeddings": 128,
                 "initializer_range": 0.2, "pad_token_id": 0, **LABELS}
        config = getattr(transformers, config_name)(**{**sizes, **overrides})
        return _save(getattr(transformers, model_name), config, path, seed)

    return build


def _distilbert(path: Path, seed: int) -> Path:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    _wordpiece_tokenizer(path, token_types=False)
    config = DistilBertConfig(vocab_size=vocab_size(), dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                              max_position_embeddings=128, initializer_range=0.2, pad_token_id=0, **LABELS)
    return _save(DistilBertForSequenceClassification, config, path, seed)


def _vit(path: Path, seed: int) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, intermediate_size=FFN, num_labels=3, initializer_range=0.2)
    return _save(ViTForImageClassification, config, path, seed)


def _decoder(config_name: str, model_name: str, **overrides: Any) -> Callable[[Path, int], Path]:
    """A causal LM with grouped-query attention where the family has it, tied embeddings, no pad token."""

    def build(path: Path, seed: int) -> Path:
        import transformers

        path.mkdir(parents=True, exist_ok=True)
        _wordlevel_tokenizer(path, bos="<s>", eos="</s>", pad=None, unk="<unk>")
        ids = {token: i for i, token in enumerate(SPECIAL)}
        sizes = {"vocab_size": vocab_size(), "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": LAYERS,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
                 "tie_word_embeddings": True, "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"],
                 "initializer_range": 0.2}
        config = getattr(transformers, config_name)(**{**sizes, **overrides})
        return _save(getattr(transformers, model_name), config, path, seed)

    return build


BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "bert": _encoder("BertConfig", "BertForSequenceClassification"),
    "distilbert": _distilbert,
    "roberta": _encoder("RobertaConfig", "RobertaForSequenceClassification", max_position_embeddings=130,
                        pad_token_id=SPECIAL.index("<pad>")),
    "xlm-roberta": _encoder("XLMRobertaConfig", "XLMRobertaForSequenceClassification", max_position_embeddings=130,
                            pad_token_id=SPECIAL.index("<pad>")),
    "deberta-v2": _encoder("DebertaV2Config", "DebertaV2ForSequenceClassification", relative_attention=True,
                           position_buckets=16, max_relative_positions=32, pos_att_type=["p2c", "c2p"]),
    "electra": _encoder("ElectraConfig", "ElectraForSequenceClassification", embedding_size=HIDDEN),
    "albert": _encoder("AlbertConfig", "AlbertForSequenceClassification", embedding_size=16),
    "mpnet": _encoder("MPNetConfig", "MPNetForSequenceClassification", token_types=False, max_position_embeddings=130),
    "modernbert": _encoder("ModernBertConfig", "ModernBertForSequenceClassification", global_attn_every_n_layers=2,
                           local_attention=16, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2,
                           sep_token_id=3),
    "vit": _vit,
    "llama": _decoder("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": _decoder("Qwen2Config", "Qwen2ForCausalLM"),
    "phi3": _decoder("Phi3Config", "Phi3ForCausalLM", pad_token_id=None),
    "gemma": _decoder("GemmaConfig", "GemmaForCausalLM", head_dim=12),
}
TEXT_CLASSIFIERS = ("bert", "distilbert", "roberta", "xlm-roberta", "deberta-v2", "electra", "albert", "mpnet",
                    "modernbert")
DECODERS = ("llama", "qwen2", "phi3", "gemma")


def build(family: str, path: Path, seed: int = 0) -> Path:
    """A saved tiny checkpoint of `family` (a key of BUILDERS) at `path`."""
    return BUILDERS[family](Path(path), seed)
