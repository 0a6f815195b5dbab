"""``medroute finetune --model-type text --base-model minilm|e5-small|DIR``: fine-tune a pretrained encoder.

    medroute finetune --model-type text --base-model e5-small --train-data data/zh_triage/train.csv \\
        --eval-data data/zh_triage/dev.csv --num-epochs 3 --max-length 128 --output-dir out/triage-zh

LoRA adapters (rank ``--lora-rank``) on every block's linear layers plus biases, LayerNorms and a linear head
over the mean of the token states; AdamW with warm-up and linear decay; class-balanced loss; the eval set is
scored after each epoch and the best epoch is kept (``--patience`` epochs without gain stop training). Texts
longer than ``--max-length`` tokens keep their first ``--head-tokens`` and their last tokens. Batches hold
texts of similar length (less padding). Runs on the GPU when torch sees one.

Writes ``--output-dir`` as an int8 bundle (the graph checked against torch on padded batches first) and,
beside it, ``<output-dir>.recipe``: the small files that rebuild the same bundle at set-up (``models.build``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from models.base_encoders import BaseEncoder, BaseModelError, load_base
from models.bundle import sha256_file
from models.text import HEAD_TAIL, encode_ids
from tools.modelling.datasets import DataError, read_labelled_csv
from tools.modelling.encoder_batches import Inputs, length_batches, predict
from tools.modelling.encoder_model import (
    EncoderClassifier,
    add_lora,
    build_encoder,
    delta_arrays,
    round_adapters_to_fp16,
)
from tools.modelling.metrics import classification_metrics

DEFAULTS = {"num_epochs": 4, "batch_size": 16, "lr": 1e-3, "max_length": 256}


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: np.ndarray  # label indices
    texts: list[str]


def encode(path: str, tokenizer: Tokenizer, labels: list[str], max_length: int, head: int) -> Encoded:
    rows = read_labelled_csv(path)
    index = {label: n for n, label in enumerate(labels)}
    unknown = sorted({row.label for row in rows} - set(index))
    if unknown:
        raise DataError(f"{path}: labels not in the training data: {', '.join(unknown[:10])}")
    texts = [row.text for row in rows]
    return Encoded(encode_ids(tokenizer, texts, max_length, head), np.array([index[r.label] for r in rows]), texts)


def class_weights(labels: np.ndarray, n_labels: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_labels).astype(np.float64)
    return torch.tensor(len(labels) / (n_labels * np.maximum(counts, 1)), dtype=torch.float32)


def trainable_state(model: EncoderClassifier) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def train(args: argparse.Namespace, base: BaseEncoder, train_set: Encoded, eval_set: Encoded, labels: list[str]):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = EncoderClassifier(build_encoder(base), base.config["hidden_size"], len(labels))
    layers = base.config["num_hidden_layers"]
    bottom = layers - min(args.train_layers or layers, layers)
    add_lora(model, args.lora_rank, 2.0 * args.lora_rank, layers - bottom)
    model.to(device)
    # The frozen blocks' states depend on the base, the blocks and the token ids only: a retrain reuses them.
    cache_file = None
    cache: dict[bytes, torch.Tensor] = {}
    if bottom and args.cache_dir:
        name = f"{Path(args.base_model).name}-{bottom}-{args.max_length}-{args.head_tokens}.pt"
        cache_file = Path(args.cache_dir) / name
        if cache_file.is_file():
            cache = torch.load(cache_file)
    train_inputs = Inputs(model, train_set.ids, bottom, device, cache)
    eval_inputs = Inputs(model, eval_set.ids, bottom, device, cache)
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, cache_file)
    del cache
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    rng = random.Random(args.seed)
    steps_per_epoch = len(length_batches(train_set.ids, args.batch_size, None))
    total = steps_per_epoch * args.num_epochs
    warmup = max(1, int(0.06 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    weights = class_weights(train_set.labels, len(labels), args.class_weighting)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    bar = tqdm(total=total, desc="fine-tuning", unit="batch", file=sys.stderr, mininterval=5, dynamic_ncols=True)
    for epoch in range(1, args.num_epochs + 1):
        model.train()
        running = 0.0
        for step, batch in enumerate(length_batches(train_set.ids, args.batch_size, rng), start=1):
            target = torch.from_numpy(train_set.labels[batch]).to(device)
            loss = loss_fn(train_inputs.logits(model, batch), target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            running += float(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{running / step:.3f}", refresh=False)
        probabilities = predict(model, eval_set.ids, device, inputs=eval_inputs)
        metrics = classification_metrics(eval_set.labels, probabilities, labels)
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(running / steps_per_epoch, 4),
                "eval_macro_f1": round(metrics["macro_f1"], 4),
                "eval_accuracy": round(metrics["accuracy"], 4),
            }
        )
        bar.write(
            f"epoch {epoch}: loss {running / steps_per_epoch:.4f}, eval macro-F1 {metrics['macro_f1']:.4f}, "
            f"accuracy {metrics['accuracy']:.4f}"
        )
        if best is None or metrics["macro_f1"] > best[0]:
            best = (metrics["macro_f1"], epoch, trainable_state(model))
        elif epoch - best[1] >= args.patience:
            bar.write(f"no gain for {args.patience} epoch(s): stopping, keeping epoch {best[1]}")
            break
    bar.close()
    assert best is not None
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in best[2]:
                parameter.copy_(best[2][name])
    round_adapters_to_fp16(model)
    return model.cpu().eval(), history, best[1]


def config_from(args: argparse.Namespace) -> None:
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.head_tokens is None:
        args.head_tokens = args.max_length // 2
    if not 1 <= args.head_tokens <= args.max_length:
        raise DataError(f"--head-tokens must be between 1 and --max-length ({args.max_length})")


def run(args: argparse.Namespace) -> int:
    from tools.modelling.encoder_export import write_outputs

    config_from(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    try:
        base = load_base(args.base_model)
    except BaseModelError as exc:
        raise DataError(str(exc)) from None
    tokenizer = Tokenizer.from_file(str(base.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    labels = sorted({row.label for row in read_labelled_csv(args.train_data)})
    train_set = encode(args.train_data, tokenizer, labels, args.max_length, args.head_tokens)
    eval_set = encode(args.eval_data, tokenizer, labels, args.max_length, args.head_tokens)
    started = time.monotonic()
    model, history, best_epoch = train(args, base, train_set, eval_set, labels)
    minutes = (time.monotonic() - started) / 60
    device_name = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} threads"
    training = {
        "method": f"{base.name} encoder fine-tuned with LoRA (rank {args.lora_rank}) + biases/LayerNorms, "
        "mean pooling, linear head",
        "base_model": args.base_model,  # a name, or the folder this machine read it from
        "data_sha256": {Path(p).name: sha256_file(Path(p)) for p in (args.train_data,)},
        "rows": len(train_set.ids),
        "hyperparameters": {
            key: getattr(args, key)
            for key in (
                "num_epochs",
                "batch_size",
                "lr",
                "max_length",
                "head_tokens",
                "lora_rank",
                "train_layers",
                "patience",
                "class_weighting",
            )
        },
        "best_epoch": best_epoch,
        "history": history,
        "seed": args.seed,
        "minutes": round(minutes, 1),
        "device": device_name,
        "command": args.command,
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    preprocessing = {
        "max_length": args.max_length,
        "head_tokens": args.head_tokens,
        "truncation": HEAD_TAIL,
        "lowercase": False,
        "tokenizer": f"{base.name}'s own tokenizer (tokenizer.json from its package)",
    }
    report = write_outputs(
        model=model,
        delta=delta_arrays(model),
        base=base,
        labels=labels,
        eval_set=eval_set,
        eval_path=Path(args.eval_data),
        output=Path(args.output_dir),
        name=args.name or Path(args.output_dir).name,
        version=args.version,
        preprocessing=preprocessing,
        training=training,
        base_model=training["base_model"],
    )
    print(json.dumps(report, ensure_ascii=False))
    return 0
