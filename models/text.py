"""Text classification with a bundle's ONNX graph and ``tokenizers`` tokenizer (no torch, no sklearn).

The graph takes ``input_ids`` and ``attention_mask`` (int64, [batch, seq]) and returns
``probabilities`` ([batch, n_labels], the bundle's label order).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.bundle import Bundle, BundleError, BundleModel, load_bundle
from models.prediction import Prediction, open_session, predictions_from
from models.registry import find_bundle

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT = "probabilities"
BATCH_SIZE = 32
CACHE_SIZE = 4096  # texts: templated reports and resent messages skip the model
HEAD_TAIL = "head_tail"  # preprocessing.truncation of encoder bundles: long texts keep their start and end


class TextClassifier(BundleModel):
    """One loaded bundle. ``predict`` may be called from several threads (both runtimes allow it)."""

    def __init__(
        self, bundle: Bundle, session: ort.InferenceSession, tokenizer: Tokenizer, cache_size: int = CACHE_SIZE
    ) -> None:
        self.bundle = bundle
        self.session = session
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self.cache_hits = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()  # least recently used first
        self._cache_lock = threading.Lock()
        preprocessing = bundle.manifest["preprocessing"]
        self.lowercase = bool(preprocessing.get("lowercase", False))
        self.max_length = int(preprocessing["max_length"])
        self.head_tokens = int(preprocessing.get("head_tokens", self.max_length))
        self.thresholds = np.array([bundle.threshold(label) for label in bundle.labels])

    @classmethod
    def load(cls, name_or_path: str | Path, *, verify: bool = True) -> TextClassifier:
        bundle = load_bundle(find_bundle(str(name_or_path)), verify=verify)
        if bundle.manifest["task"] != "text_classification" or bundle.manifest["input_kind"] != "text":
            raise BundleError(f"{bundle.ref} is a {bundle.manifest['task']} model, not text_classification")
        if bundle.manifest.get("members"):
            return EnsembleTextClassifier.from_bundle(bundle)
        tokenizer = Tokenizer.from_file(str(bundle.file(TOKENIZER_FILE)))
        tokenizer.no_padding()
        preprocessing = bundle.manifest["preprocessing"]
        if preprocessing.get("truncation") == HEAD_TAIL:
            tokenizer.no_truncation()  # cut by encode_ids: head and tail kept
        else:
            tokenizer.enable_truncation(int(preprocessing["max_length"]))
        session = open_session(bundle.file(MODEL_FILE))
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(bundle.labels):
            raise BundleError(f"{bundle.ref}: {MODEL_FILE} has {width} outputs for {len(bundle.labels)} labels")
        return cls(bundle, session, tokenizer)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One prediction per text, in order; an empty text gets the model's prior (its bias)."""
        return predictions_from(self.predict_proba(texts), self.labels, self.thresholds)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [len(texts), len(labels)] in label order; repeated texts come from an LRU cache."""
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not one string")
        if self.lowercase:
            texts = [text.lower() for text in texts]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for n, text in enumerate(texts):
                cached = self._cache.get(text)
                if cached is None:
                    missing.setdefault(text, []).append(n)
                else:
                    self._cache.move_to_end(text)
                    out[n] = cached
                    self.cache_hits += 1
        if missing:
            unique = list(missing)
            computed = self._run(unique)
            with self._cache_lock:
                for text, row in zip(unique, computed, strict=True):
                    out[missing[text]] = row
                    if self.cache_size:
                        self._cache[text] = row
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        ids = encode_ids(self.tokenizer, texts, self.max_length, self.head_tokens)
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        # Batches of similar length pad less; padding never changes a row's result.
        order = sorted(range(len(ids)), key=lambda n: len(ids[n]))
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            input_ids, attention_mask = pad([ids[n] for n in rows])
            feed = {"input_ids": input_ids, "attention_mask": attention_mask}
            out[rows] = self.session.run([OUTPUT], feed)[0]
        return out


def pad(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``input_ids`` and ``attention_mask``; at least one column, so empty texts work."""
    width = max([1, *map(len, sequences)])
    input_ids = np.zeros((len(sequences), width), dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


class EnsembleTextClassifier(TextClassifier):
    """A bundle whose manifest lists ``members`` (bundle folders inside it, each with the same labels) and
    ``member_weights``: its probabilities are the members' weighted mean (e.g. TF-IDF + a fine-tuned encoder,
    whose errors differ). Its own manifest holds the thresholds; the members' caches are off (this one caches).
    """

    def __init__(self, bundle: Bundle, members: list[TextClassifier], weights: list[float]) -> None:
        self.bundle = bundle
        self.members = members
        self.weights = np.array(weights, dtype=np.float32) / float(sum(weights))
        self.cache_size = CACHE_SIZE
        self.cache_hits = 0
        self._cache = OrderedDict()
        self._cache_lock = threading.Lock()
        self.lowercase = False
        self.thresholds = np.array([bundle.threshold(label) for label in bundle.labels])
        for member in members:
            member.cache_size = 0
            if member.labels != bundle.labels:
                raise BundleError(f"{bundle.ref}: member {member.ref} has other labels ({', '.join(member.labels)})")

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> EnsembleTextClassifier:
        members = [TextClassifier.load(bundle.path / relative, verify=False) for relative in bundle.manifest["members"]]
        weights = bundle.manifest.get("member_weights") or [1.0] * len(members)
        if len(weights) != len(members):
            raise BundleError(f"{bundle.ref}: {len(weights)} member_weights for {len(members)} members")
        return cls(bundle, members, weights)

    def _run(self, texts: list[str]) -> np.ndarray:
        return sum(w * m.predict_proba(texts) for w, m in zip(self.weights, self.members, strict=True))


def head_tail(ids: Sequence[int], max_length: int, head_tokens: int) -> list[int]:
    """``ids`` cut to ``max_length``: the first ``head_tokens`` and the last ``max_length - head_tokens``.

    Long reports put the findings at the start and the conclusion or sign-off at the end; both tell the kind
    of document. With ``head_tokens == max_length`` only the start is kept, as plain truncation would.
    """
    if len(ids) <= max_length:
        return list(ids)
    tail = max_length - head_tokens
    return list(ids[:head_tokens]) + (list(ids[-tail:]) if tail > 0 else [])


def encode_ids(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, head_tokens: int) -> list[list[int]]:
    """Token ids per text, special tokens included, cut by ``head_tail`` (training and run time share this)."""
    return [head_tail(encoding.ids, max_length, head_tokens) for encoding in tokenizer.encode_batch(list(texts))]
