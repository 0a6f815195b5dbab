"""``medroute finetune --model-type text``: a hospital's labelled CSV to a text bundle.

The method is the one the shipped text bundles use (``tools.modelling.build_text_model``): a tokenizer
trained on the hospital's own texts, token TF-IDF features and a logistic regression, compiled
into one ONNX graph. It trains in seconds on two cores, needs no pretrained encoder (none that
ships offline reads Chinese in Hugging Face form), and on the shipped data it beat the frozen
encoders that were measured (see docs/MODELS.md).

Chinese, Japanese and Korean text is tokenised one character per token with bigrams of adjacent
tokens (``--base-model tfidf-char``); other text word by word with header bigrams
(``--base-model tfidf-word``). ``--base-model tfidf`` (the default) picks by the share of CJK
characters in the training texts. ``--num-epochs``, ``--lr`` and ``--batch-size`` do not apply to
this closed-form method and are recorded as unused.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tools.modelling.build_text_model import Config, Dataset, build
from tools.modelling.datasets import DataError, read_labelled_csv

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
TFIDF_METHODS = ("tfidf", "tfidf-word", "tfidf-char")


def is_tfidf(base_model: str | None) -> bool:
    """``--base-model`` names this module's method (else an encoder: ``tools.modelling.finetune_encoder``)."""
    return base_model is None or base_model in TFIDF_METHODS


def cjk_share(texts: list[str]) -> float:
    """The share of non-space characters that are Chinese, Japanese or Korean."""
    sample = "".join(texts[:2000])
    letters = sum(1 for char in sample if not char.isspace())
    return len(CJK.findall(sample)) / letters if letters else 0.0


def load(path: Path) -> Dataset:
    from models.bundle import sha256_file

    rows = read_labelled_csv(path)
    return Dataset([row.text for row in rows], [row.label for row in rows], {path.name: sha256_file(path)})


def config_for(args: argparse.Namespace, train_texts: list[str]) -> Config:
    method = args.base_model or "tfidf"
    if method not in TFIDF_METHODS:
        raise DataError(
            f"--base-model {method!r}: the TF-IDF methods are {', '.join(TFIDF_METHODS)}; encoders are "
            "minilm, e5-small or a Hugging Face folder"
        )
    char_level = method == "tfidf-char" or (method == "tfidf" and cjk_share(train_texts) > 0.3)
    defaults = Config()
    return Config(
        max_length=args.max_length or (512 if char_level else defaults.max_length),
        prefix_tokens=defaults.prefix_tokens,
        header_bigrams=True,
        c=defaults.c,
        seed=args.seed,
        char_level=char_level,
        all_bigrams=char_level,
        class_weight=None if args.class_weighting == "none" else "balanced",
    )


def run(args: argparse.Namespace) -> int:
    train_data = load(Path(args.train_data))
    eval_data = load(Path(args.eval_data))
    unseen = sorted(set(eval_data.labels) - set(train_data.labels))
    if unseen:
        raise DataError(f"{args.eval_data}: labels not in the training data: {', '.join(unseen[:10])}")
    config = config_for(args, train_data.texts)
    build(
        train_data,
        eval_data,
        name=args.name or Path(args.output_dir).name,
        version=args.version,
        output=Path(args.output_dir),
        config=config,
        cv_folds=0,
    )
    return 0
