"""A real LoRA adapter for the tests: trained for a few seeded steps on a tiny BERT classifier.

Training (not a hand-set delta) makes the adapter's factors what peft writes after fine-tuning:
both lora_A and lora_B non-zero, the classifier saved in full as a module to save.
"""

from __future__ import annotations

from pathlib import Path


def make_lora_adapter(base: Path, out: Path, *, seed: int = 0, steps: int = 8) -> Path:
    """Train LoRA (r=4 on query/value, classifier trained in full) on random token batches; save it to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"])
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    vocab = model.config.vocab_size
    peft_model.train()
    for _ in range(steps):
        input_ids = torch.randint(5, vocab, (8, 12))
        labels = (input_ids[:, 1] % 2).long()  # a learnable rule: the first word's parity
        loss = peft_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval().save_pretrained(out)
    return out
