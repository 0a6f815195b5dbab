"""A tiny random BERT in a local Hugging Face folder (config.json, model.safetensors, tokenizer.json) and a
small labelled CSV, for fine-tuning tests that take seconds on a CPU."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

WORDS = {
    "radiology": ["chest", "xray", "film", "impression", "lungs", "clear", "opacity", "view", "radiograph"],
    "discharge": ["discharged", "home", "hospital", "course", "medications", "follow", "admitted", "stable"],
    "letter": ["dear", "doctor", "thank", "you", "referral", "sincerely", "regards", "kindly", "seen"],
}
FILLER = ["the", "a", "of", "and", "with", "was", "is", "in", "on", "for", "to", "patient"]


def write_tiny_csv(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "text", "label"])
        for n in range(rows):
            label = sorted(WORDS)[n % len(WORDS)]
            length = rng.randint(4, 40)  # uneven lengths: batches are padded
            words = [rng.choice(WORDS[label] if rng.random() < 0.5 else FILLER) for _ in range(length)]
            writer.writerow([f"{seed}-{n}", " ".join(words), label])
    return path


def write_tiny_encoder(folder: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))]
    tokenizer = Tokenizer(models.WordLevel({w: n for n, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "model_type": "bert",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden,
        "vocab_size": len(vocab),
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rng = np.random.default_rng(seed)
    weights = {
        "embeddings.word_embeddings.weight": (len(vocab), hidden),
        "embeddings.position_embeddings.weight": (64, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
    }
    block = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (2 * hidden, hidden),
        "output.dense": (hidden, 2 * hidden),
    }
    for layer in range(layers):
        for name, shape in block.items():
            weights[f"encoder.layer.{layer}.{name}.weight"] = shape
            weights[f"encoder.layer.{layer}.{name}.bias"] = (shape[0],)
    arrays = {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape in weights.items()}
    for prefix in ["embeddings"] + [
        f"encoder.layer.{n}.{p}" for n in range(layers) for p in ("attention.output", "output")
    ]:
        arrays[f"{prefix}.LayerNorm.weight"] = np.ones(hidden, dtype=np.float32)
        arrays[f"{prefix}.LayerNorm.bias"] = np.zeros(hidden, dtype=np.float32)
    save_file(arrays, str(folder / "model.safetensors"))
    return folder
