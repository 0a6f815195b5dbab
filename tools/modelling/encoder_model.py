"""The torch side of encoder fine-tuning: a BERT encoder + mean pooling + linear head, with LoRA adapters.

LoRA (low-rank adapters) keeps what a fine-tune changes small enough to commit: each adapted linear layer
computes ``W x + (alpha / r) * B (A x)`` with the pretrained ``W`` frozen and only ``A`` ([r, in]) and ``B``
([out, r]) trained; biases, LayerNorms and the head are trained in full (a few thousand numbers per layer).
``delta_arrays`` is everything that differs from the base encoder; ``models.build`` merges it back with
numpy at set-up, so the shipped graph is a plain encoder (no adapter cost at run time).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.base_encoders import BaseEncoder

# The linear layers of each BERT block that get adapters: attention projections and the feed-forward pair.
LORA_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))  # zero: training starts at the base model
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


class EncoderClassifier(nn.Module):
    """Encoder -> mean of the unmasked token states -> dropout -> linear -> logits."""

    def __init__(self, encoder: nn.Module, hidden: int, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


class ProbabilityWrapper(nn.Module):
    """What the ONNX graph computes: keyword call (transformers 5 needs it for export), softmax out."""

    def __init__(self, model: EncoderClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(input_ids=input_ids, attention_mask=attention_mask), dim=-1)


def build_encoder(base: BaseEncoder) -> nn.Module:
    """A ``transformers.BertModel`` holding the base weights (eager attention: the mask survives ONNX export)."""
    from transformers import BertConfig, BertModel

    fields = {key: value for key, value in base.config.items() if not key.startswith("_")}
    fields.pop("architectures", None)
    config = BertConfig(**fields)
    config._attn_implementation = "eager"
    encoder = BertModel(config, add_pooling_layer=False)
    state = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in base.weights.items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.endswith("_ids")]
    if missing or unexpected:
        raise ValueError(
            f"{base.name}: weights do not fit a BertModel (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return encoder


def add_lora(model: EncoderClassifier, rank: int, alpha: float, train_layers: int | None = None) -> None:
    """Freeze the encoder but its biases and LayerNorms; put adapters on every block's linear layers.

    With ``train_layers`` only the top that many blocks are adapted; the blocks below stay the base model's.
    """
    layers = model.encoder.encoder.layer
    first = len(layers) - (train_layers or len(layers))
    for name, parameter in model.encoder.named_parameters():
        parameter.requires_grad = name.endswith(".bias") or ".LayerNorm." in name
    model.encoder.embeddings.requires_grad_(False)  # embeddings stay the base model's (large, not needed)
    for layer in layers[:first]:
        layer.requires_grad_(False)
    for layer in layers[first:]:
        for target in LORA_TARGETS:
            parent_path, _, attribute = target.rpartition(".")
            parent = layer.get_submodule(parent_path)
            setattr(parent, attribute, LoRALinear(getattr(parent, attribute), rank, alpha))


@torch.no_grad()
def bottom_states(model: EncoderClassifier, input_ids: torch.Tensor, mask: torch.Tensor, bottom: int) -> torch.Tensor:
    """Token states after the embeddings and the first ``bottom`` blocks (eval mode: no dropout)."""
    encoder = model.encoder
    full = encoder.encoder.layer
    was_training = model.training
    model.eval()
    try:
        encoder.encoder.layer = full[:bottom]
        return encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    finally:
        encoder.encoder.layer = full
        model.train(was_training)


def top_logits(model: EncoderClassifier, states: torch.Tensor, mask: torch.Tensor, bottom: int) -> torch.Tensor:
    """The rest of ``model`` from the states ``bottom_states`` gave: the blocks above, pooling, head."""
    additive = (1.0 - mask[:, None, None, :].to(states.dtype)) * torch.finfo(states.dtype).min
    for layer in model.encoder.encoder.layer[bottom:]:
        output = layer(states, attention_mask=additive)
        states = output[0] if isinstance(output, tuple) else output
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return model.head(model.dropout(pooled))


def delta_arrays(model: EncoderClassifier) -> dict[str, np.ndarray]:
    """What differs from the base encoder, by ``BertModel`` name: ``<linear>.lora_a|lora_b`` (fp16),
    trained biases and LayerNorms (fp32), and ``head.weight``/``head.bias``."""
    out: dict[str, np.ndarray] = {}
    for name, parameter in model.encoder.named_parameters():
        if not parameter.requires_grad:
            continue
        array = parameter.detach().cpu().numpy()
        if name.endswith(("lora_a", "lora_b")):
            out[name] = array.astype(np.float16)
        else:
            out[name.replace(".base.", ".")] = array.astype(np.float32)
    scales = {module.scale for module in model.modules() if isinstance(module, LoRALinear)}
    out["lora_scale"] = np.array(scales.pop() if scales else 0.0, dtype=np.float32)
    out["head.weight"] = model.head.weight.detach().cpu().numpy().astype(np.float32)
    out["head.bias"] = model.head.bias.detach().cpu().numpy().astype(np.float32)
    return out


def round_adapters_to_fp16(model: EncoderClassifier) -> None:
    """Make the torch model compute with exactly what ``delta_arrays`` stores (the parity check compares them)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_a.copy_(module.lora_a.half().float())
                module.lora_b.copy_(module.lora_b.half().float())


def merged_encoder(base: BaseEncoder, delta: dict[str, np.ndarray], n_labels: int) -> EncoderClassifier:
    """A plain (adapter-free) torch classifier with ``delta`` merged into the base weights (for export)."""
    from models.build import merge_delta

    weights = merge_delta(base.weights, delta)
    encoder_weights = {name: array for name, array in weights.items() if not name.startswith("head.")}
    encoder = build_encoder(BaseEncoder(base.name, base.config, encoder_weights, base.tokenizer_path))
    model = EncoderClassifier(encoder, base.config["hidden_size"], n_labels)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weights["head.weight"]))
        model.head.bias.copy_(torch.from_numpy(weights["head.bias"]))
    return model.eval()
