"""Train a text classifier and write it as a model bundle that runs on ONNX Runtime + tokenizers alone.

    python -m tools.modelling.build_text_model --train data/mtsamples/doctype_train.csv \\
        --dev data/mtsamples/doctype_dev.csv --name doctype-en --version 1.0.0 \\
        --output models/bundles/doctype-en

The model: a cased word-level tokenizer trained on the training texts (NFKC, digits -> 0), then
TF-IDF (sublinear tf, L2-normalised) over three kinds of token features, and a multinomial logistic
regression (class-balanced). The features:

* every token (case kept: section headers such as ``FINDINGS`` or ``DISCHARGE DIAGNOSIS`` are
  strong document-type signals and are written in capitals);
* the tokens of the first ``--prefix-tokens`` positions again, as their own features (how a
  document starts says much about its type, whatever its length);
* bigrams of "header" tokens (all-capitals words and punctuation), i.e. header phrases.

The same computation is written as an ONNX graph (ids -> feature columns by lookup tables, counts by
ScatterElements-add, log tf, idf, L2 norm, MatMul, Softmax), so the bundle needs neither sklearn nor
torch; the build checks that the graph reproduces sklearn's probabilities. Figures are on the dev set
for a model trained on the training set only; hyper-parameters were chosen by cross-validation on the
training set. A plain ``TfidfVectorizer + LogisticRegression`` baseline is measured on the same split.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from medroute.config import SOURCE_DATE_EPOCH
from models.bundle import sha256_file, write_manifest
from models.text import MODEL_FILE, OUTPUT, TOKENIZER_FILE, TextClassifier

PAD, UNK = "[PAD]", "[UNK]"  # ids 0 and 1; never features
OPSET = 18
ML_OPSET = 2  # ai.onnx.ml LabelEncoder-2 (int64 -> int64)


@dataclass(frozen=True)
class Config:
    max_length: int = 1024  # tokens; doc-type train texts: median 500, ~10% longer; 4096 gained nothing in CV
    min_frequency: int = 2  # a word enters the tokenizer's vocabulary if seen this often
    prefix_tokens: int = 20
    header_bigrams: bool = True
    c: float = 3.0
    seed: int = 20240601
    char_level: bool = False  # every CJK character its own token (Chinese has no spaces between words)
    all_bigrams: bool = False  # bigrams of every adjacent token pair, not only of header tokens
    class_weight: str | None = "balanced"


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    labels: list[str]
    sha256: dict[str, str]


def read_csv(paths: Sequence[Path]) -> Dataset:
    """Rows of ``id,text,label`` CSV files (optionally gzipped), concatenated."""
    texts: list[str] = []
    labels: list[str] = []
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as stream:
            for row in csv.DictReader(stream):
                texts.append(row["text"])
                labels.append(row["label"])
    return Dataset(texts, labels, {path.name: sha256_file(path) for path in paths})


def train_tokenizer(texts: Sequence[str], config: Config) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\d"), "0")])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if config.char_level:
        # Han, kana and hangul characters isolated one per token; other scripts stay whole words.
        cjk = Regex(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Split(cjk, behavior="isolated")]
        )
    trainer = trainers.WordLevelTrainer(min_frequency=config.min_frequency, special_tokens=[PAD, UNK])
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer  # untruncated: features keep the first max_length ids, as the runtime does


def is_header_token(token: str) -> bool:
    return (token.isupper() and len(token) > 1) or not any(char.isalnum() for char in token)


class TokenFeatures:
    """Token ids -> feature names: ``u<id>`` token, ``p<id>`` token near the start, ``b<id>_<id>`` header bigram.

    ``__call__`` is the sklearn analyzer; ``export_onnx`` writes the same mapping as lookup tables.
    """

    def __init__(self, tokenizer: Tokenizer, config: Config) -> None:
        vocab = tokenizer.get_vocab()
        self.vocab_size = tokenizer.get_vocab_size()
        self.special = {vocab[PAD], vocab[UNK]}
        headers = vocab.items() if config.all_bigrams else ((t, i) for t, i in vocab.items() if is_header_token(t))
        self.header = {index for _, index in headers} - self.special
        self.config = config

    def __call__(self, ids: Sequence[int]) -> list[str]:
        ids = ids[: self.config.max_length]
        features = [f"u{i}" for i in ids if i not in self.special]
        features += [f"p{i}" for i in ids[: self.config.prefix_tokens] if i not in self.special]
        if self.config.header_bigrams:
            features += [f"b{a}_{b}" for a, b in itertools.pairwise(ids) if a in self.header and b in self.header]
        return features


@dataclass
class TrainedModel:
    config: Config
    tokenizer: Tokenizer
    pipeline: Pipeline  # TfidfVectorizer(analyzer=TokenFeatures) + LogisticRegression, fed token ids

    @property
    def labels(self) -> list[str]:
        return [str(label) for label in self.pipeline.classes_]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline.predict_proba(self.token_ids(texts))


def make_pipeline_for(tokenizer: Tokenizer, config: Config) -> Pipeline:
    return make_pipeline(
        TfidfVectorizer(analyzer=TokenFeatures(tokenizer, config), sublinear_tf=True, norm="l2"),
        LogisticRegression(C=config.c, class_weight=config.class_weight, max_iter=5000, random_state=config.seed),
    )


def train(data: Dataset, config: Config) -> TrainedModel:
    tokenizer = train_tokenizer(data.texts, config)
    pipeline = make_pipeline_for(tokenizer, config)
    pipeline.fit([encoding.ids for encoding in tokenizer.encode_batch(data.texts)], data.labels)
    return TrainedModel(config, tokenizer, pipeline)


def cross_validated_f1(data: Dataset, config: Config, folds: int) -> float:
    """Macro-F1 of ``folds``-fold CV on the training data (the tokenizer is fitted once, on all of it)."""
    tokenizer = train_tokenizer(data.texts, config)
    ids = [encoding.ids for encoding in tokenizer.encode_batch(data.texts)]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    predicted = cross_val_predict(make_pipeline_for(tokenizer, config), ids, data.labels, cv=splitter)
    return float(f1_score(data.labels, predicted, average="macro"))


def scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    return {
        "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
    }


def baselines(train_data: Dataset, dev: Dataset, config: Config) -> dict[str, dict[str, float]]:
    """Plain TF-IDF + logistic regression on the same split: library defaults, and class-balanced.

    Words for alphabetic text; character 1-3-grams for CJK text, where sklearn's word pattern would
    take whole clauses as one "word".
    """
    results = {}
    for name, weight in (("tfidf_logreg", None), ("tfidf_logreg_balanced", "balanced")):
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3)) if config.char_level else TfidfVectorizer()
        model = make_pipeline(
            vectorizer, LogisticRegression(class_weight=weight, max_iter=5000, random_state=config.seed)
        )
        model.fit(train_data.texts, train_data.labels)
        results[name] = scores(dev.labels, model.predict(dev.texts))
    return results


# --- ONNX export ---------------------------------------------------------------------------------


def feature_tables(model: TrainedModel) -> tuple[np.ndarray, np.ndarray, dict[int, int], int]:
    """Lookup tables id -> column for tokens and prefix tokens, bigram key -> column; the unused column."""
    vectorizer: TfidfVectorizer = model.pipeline[0]
    vocab_size = model.tokenizer.get_vocab_size()
    unused = len(vectorizer.vocabulary_)
    tokens = np.full(vocab_size, unused, dtype=np.int64)
    prefix = np.full(vocab_size, unused, dtype=np.int64)
    bigrams: dict[int, int] = {}
    for feature, column in vectorizer.vocabulary_.items():
        kind, rest = feature[0], feature[1:]
        if kind == "u":
            tokens[int(rest)] = column
        elif kind == "p":
            prefix[int(rest)] = column
        else:
            left, right = (int(part) for part in rest.split("_"))
            bigrams[left * vocab_size + right] = column
    return tokens, prefix, bigrams, unused


def export_onnx(model: TrainedModel) -> onnx.ModelProto:
    vectorizer: TfidfVectorizer = model.pipeline[0]
    classifier: LogisticRegression = model.pipeline[-1]
    tokens, prefix, bigrams, unused = feature_tables(model)
    n_labels = len(classifier.classes_)
    int64 = {
        "vocab_size": tokens.size,
        "n_columns": unused + 1,
        "n_features": unused,
        "prefix_len": model.config.prefix_tokens,
        "zero": 0,
        "one": 1,
        "minus_one": -1,
        "end": np.iinfo(np.int64).max,
        "axis1": 1,
    }
    float32 = {"f_zero": 0.0, "f_one": 1.0, "tiny": 1e-12}
    initializers = [
        numpy_helper.from_array(tokens, "token_column"),
        numpy_helper.from_array(prefix, "prefix_column"),
        numpy_helper.from_array(vectorizer.idf_.astype(np.float32), "idf"),
        numpy_helper.from_array(classifier.coef_.T.astype(np.float32), "weight"),
        numpy_helper.from_array(classifier.intercept_.astype(np.float32), "bias"),
        *(numpy_helper.from_array(np.array([value], dtype=np.int64), name) for name, value in int64.items()),
        *(numpy_helper.from_array(np.array(value, dtype=np.float32), name) for name, value in float32.items()),
    ]
    node = helper.make_node
    nodes = [
        node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        # token features
        node("Gather", ["token_column", "input_ids"], ["token_idx"]),
        # the same tokens at the first positions
        node("Slice", ["input_ids", "zero", "prefix_len", "axis1"], ["prefix_ids"]),
        node("Slice", ["mask", "zero", "prefix_len", "axis1"], ["prefix_mask"]),
        node("Gather", ["prefix_column", "prefix_ids"], ["prefix_idx"]),
    ]
    columns, updates = ["token_idx", "prefix_idx"], ["mask", "prefix_mask"]
    if bigrams:
        keys = sorted(bigrams)
        nodes += [
            node("Slice", ["input_ids", "zero", "minus_one", "axis1"], ["left_ids"]),
            node("Slice", ["input_ids", "one", "end", "axis1"], ["right_ids"]),
            node("Mul", ["left_ids", "vocab_size"], ["left_key"]),
            node("Add", ["left_key", "right_ids"], ["bigram_key"]),
            node(
                "LabelEncoder",
                ["bigram_key"],
                ["bigram_idx"],
                domain="ai.onnx.ml",
                keys_int64s=keys,
                values_int64s=[bigrams[key] for key in keys],
                default_int64=unused,
            ),
            node("Slice", ["mask", "zero", "minus_one", "axis1"], ["left_mask"]),
            node("Slice", ["mask", "one", "end", "axis1"], ["right_mask"]),
            node("Mul", ["left_mask", "right_mask"], ["bigram_mask"]),
        ]
        columns.append("bigram_idx")
        updates.append("bigram_mask")
    nodes += [
        node("Concat", columns, ["columns"], axis=1),
        node("Concat", updates, ["updates"], axis=1),
        # counts per feature column: [batch, n_features + 1]; the last column collects unknowns
        node("Shape", ["input_ids"], ["ids_shape"], end=1),
        node("Concat", ["ids_shape", "n_columns"], ["counts_shape"], axis=0),
        node(
            "ConstantOfShape",
            ["counts_shape"],
            ["empty_counts"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
        ),
        node("ScatterElements", ["empty_counts", "columns", "updates"], ["all_counts"], axis=1, reduction="add"),
        node("Slice", ["all_counts", "zero", "n_features", "axis1"], ["counts"]),
        # sublinear tf (1 + log tf where tf > 0), times idf, L2-normalised
        node("Max", ["counts", "f_one"], ["counts_at_least_one"]),
        node("Log", ["counts_at_least_one"], ["log_counts"]),
        node("Add", ["log_counts", "f_one"], ["log_tf"]),
        node("Greater", ["counts", "f_zero"], ["present"]),
        node("Where", ["present", "log_tf", "f_zero"], ["tf"]),
        node("Mul", ["tf", "idf"], ["tfidf"]),
        node("Mul", ["tfidf", "tfidf"], ["squares"]),
        node("ReduceSum", ["squares", "axis1"], ["sum_squares"], keepdims=1),
        node("Sqrt", ["sum_squares"], ["norm"]),
        node("Max", ["norm", "tiny"], ["safe_norm"]),
        node("Div", ["tfidf", "safe_norm"], ["features"]),
        node("MatMul", ["features", "weight"], ["scaled"]),
        node("Add", ["scaled", "bias"], ["logits"]),
        node("Softmax", ["logits"], [OUTPUT], axis=-1),
    ]
    used = {name for n in nodes for name in n.input}
    initializers = [tensor for tensor in initializers if tensor.name in used]  # e.g. bigram constants
    graph = helper.make_graph(
        nodes,
        "token_tfidf_logreg",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", n_labels])],
        initializers,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="medroute.tools.modelling.build_text_model",
    )
    onnx_model.ir_version = 9  # readable by onnxruntime releases older than this onnx package
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


# --- bundle --------------------------------------------------------------------------------------


def created_at() -> str:
    """Build time, or ``SOURCE_DATE_EPOCH`` where set (reproducible builds)."""
    epoch = SOURCE_DATE_EPOCH()
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.replace(microsecond=0).isoformat()


def build(
    train_data: Dataset,
    dev: Dataset,
    *,
    name: str,
    version: str,
    output: Path,
    config: Config,
    cv_folds: int = 5,
    default_threshold: float = 0.5,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> TextClassifier:
    """Train on ``train_data``, measure on ``dev``, write the bundle to ``output``; the loaded result."""
    started = time.monotonic()
    model = train(train_data, config)
    log(f"trained: {len(model.pipeline[0].vocabulary_)} features, {model.tokenizer.get_vocab_size()} tokens")
    lengths = np.array([len(ids) for ids in model.token_ids(train_data.texts)])
    staging = output.parent / f".{output.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.tokenizer.save(str(staging / TOKENIZER_FILE))
    onnx.save(export_onnx(model), str(staging / MODEL_FILE))
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": "text_classification",
        "input_kind": "text",
        "labels": model.labels,
        "thresholds": {},
        "default_threshold": default_threshold,
        "preprocessing": {
            "max_length": config.max_length,
            "truncation": "keep the first max_length tokens",
            "lowercase": False,
            "tokenizer": (
                "CJK characters one per token, other text word-level; NFKC, digits replaced by 0 (tokenizer.json)"
                if config.char_level
                else "word-level, NFKC, digits replaced by 0, case kept (tokenizer.json)"
            ),
        },
        "training": {
            "data_sha256": train_data.sha256,
            "rows": len(train_data.texts),
            "method": (
                f"token TF-IDF (tokens, first-position tokens, {'all' if config.all_bigrams else 'header'} bigrams)"
                " + logistic regression"
            ),
            "hyperparameters": asdict(config),
            "selected_by": "stratified cross-validation macro-F1 on the training rows (dev not used)",
            "seed": config.seed,
            "created_at": created_at(),
            "tokens_per_text": {"median": int(np.median(lengths)), "p90": int(np.percentile(lengths, 90))},
            "truncated_share": round(float(np.mean(lengths > config.max_length)), 4),
        },
        "metrics": {},
    }
    write_manifest(staging, manifest)
    classifier = TextClassifier.load(staging)
    predictions = classifier.predict(dev.texts)
    onnx_probs = np.array([[p.scores[label] for label in model.labels] for p in predictions])
    parity = float(np.abs(onnx_probs - model.predict_proba(dev.texts)).max())
    if parity > 1e-4:
        raise RuntimeError(f"ONNX graph differs from the sklearn model by {parity:.2e} on dev")
    confident = [p for p in predictions if not p.below_threshold]
    manifest["metrics"] = {
        "dev": {
            **scores(dev.labels, [p.label for p in predictions]),
            "rows": len(dev.texts),
            "data_sha256": dev.sha256,
            "per_label_f1": dict(
                zip(
                    model.labels,
                    np.round(
                        f1_score(dev.labels, [p.label for p in predictions], labels=model.labels, average=None), 4
                    ).tolist(),
                    strict=True,
                )
            ),
            "share_at_or_above_threshold": round(len(confident) / max(1, len(predictions)), 4),
            "accuracy_at_or_above_threshold": round(
                float(
                    np.mean(
                        [p.label == t for p, t in zip(predictions, dev.labels, strict=True) if not p.below_threshold]
                    )
                )
                if confident
                else 0.0,
                4,
            ),
        },
        "baselines_dev": baselines(train_data, dev, config),
        "onnx_vs_sklearn_max_abs_diff": float(f"{parity:.3g}"),
    }
    if cv_folds > 1:
        manifest["metrics"]["train_cv_macro_f1"] = round(cross_validated_f1(train_data, config, cv_folds), 4)
    write_manifest(staging, manifest)
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    log(f"wrote {output} in {time.monotonic() - started:.0f}s: {manifest['metrics']}")
    return TextClassifier.load(output)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="python -m tools.modelling.build_text_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--train", type=Path, action="append", required=True, help="id,text,label CSV (repeatable)")
    parser.add_argument("--dev", type=Path, action="append", required=True, help="held-out CSV for the figures")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--output", type=Path, required=True, help="bundle directory (replaced)")
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--min-frequency", type=int, default=defaults.min_frequency)
    parser.add_argument("--prefix-tokens", type=int, default=defaults.prefix_tokens)
    parser.add_argument("--no-header-bigrams", dest="header_bigrams", action="store_false")
    parser.add_argument(
        "--char-level", action="store_true", help="CJK characters as tokens, bigrams of all adjacent tokens (Chinese)"
    )
    parser.add_argument("--C", dest="c", type=float, default=defaults.c, help="inverse regularisation strength")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--cv-folds", type=int, default=5, help="report CV macro-F1 on train (0: skip)")
    parser.add_argument("--default-threshold", type=float, default=0.5)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(
        max_length=args.max_length,
        min_frequency=args.min_frequency,
        prefix_tokens=args.prefix_tokens,
        header_bigrams=args.header_bigrams,
        c=args.c,
        seed=args.seed,
        char_level=args.char_level,
        all_bigrams=args.char_level,
    )
    build(
        read_csv(args.train),
        read_csv(args.dev),
        name=args.name,
        version=args.version,
        output=args.output,
        config=config,
        cv_folds=args.cv_folds,
        default_threshold=args.default_threshold,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
