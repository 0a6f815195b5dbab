"""Which model classifies an input in ``medroute batch``, and the loaded models (each loaded once).

``auto``: Chinese text -> ``triage-zh``, other text -> ``doctype-en``, a chest radiograph ->
``cxr-pneumonia``; a DICOM image that is not a frontal chest radiograph has no model. PNG/JPEG carry
no metadata and are taken as chest radiographs. ``--task`` limits the inputs to one kind;
``--model`` forces one bundle for every input of the kind it takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.bundle import BundleError, load_manifest
from models.registry import find_bundle
from tools.operations.batch_inputs import ImageInput, Input, TextInput

TASKS = ("auto", "text_classification", "image_classification")
TEXT_MODELS = {"zh": "triage-zh", "en": "doctype-en"}
IMAGE_MODEL = "cxr-pneumonia"


class Model(Protocol):
    @property
    def ref(self) -> str: ...

    def predict(self, inputs: Sequence[Any]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Choice:
    model: str | None  # bundle name (or name@version / path); None: nothing classifies this input
    reason: str = ""  # why there is no model


class ModelChoice:
    """The model for each input, by ``task`` and an optional forced ``model``."""

    def __init__(self, task: str = "auto", model: str | None = None) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (one of {', '.join(TASKS)})")
        self.task = task
        self.forced = model
        self.forced_kind: str | None = None
        if model is not None:
            manifest = load_manifest(find_bundle(model))  # BundleError when it does not exist
            self.forced_kind = "text" if manifest["input_kind"] == "text" else "image"
            if task != "auto" and manifest["task"] != task:
                raise BundleError(f"{model} is a {manifest['task']} model; the task is {task}")

    def choose(self, item: Input) -> Choice:
        kind = "text" if isinstance(item, TextInput) else "image"
        wanted = {"text_classification": "text", "image_classification": "image"}.get(self.task)
        if wanted is not None and kind != wanted:
            return Choice(None, f"{kind} input; the task is {self.task}")
        if self.forced is not None:
            if kind != self.forced_kind:
                return Choice(None, f"{kind} input; {self.forced} takes {self.forced_kind}")
            return Choice(self.forced)
        if isinstance(item, TextInput):
            return Choice(TEXT_MODELS[item.language])
        assert isinstance(item, ImageInput)
        if item.chest_radiograph is False:
            return Choice(None, f"not a frontal chest radiograph ({item.note}): no model for it")
        return Choice(IMAGE_MODEL)


class ModelUnavailableError(Exception):
    """A chosen model cannot be loaded; the message says why."""


class Models:
    """Loads each chosen model once; a model that fails to load fails every input that needs it."""

    def __init__(self) -> None:
        self._loaded: dict[str, Model | ModelUnavailableError] = {}

    def use(self, name: str, model: Model) -> None:
        """Answer to ``name`` with a model already loaded (e.g. the version a worker runs)."""
        self._loaded[name] = model

    def get(self, name: str) -> Model:
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        found = self._loaded[name]
        if isinstance(found, ModelUnavailableError):
            raise found
        return found

    @staticmethod
    def _load(name: str) -> Model | ModelUnavailableError:
        try:
            manifest = load_manifest(find_bundle(name))
            if manifest["input_kind"] == "text":
                from models.text import TextClassifier

                return TextClassifier.load(name)
            from models.image import ImageClassifier

            return ImageClassifier.load(name)
        except (BundleError, OSError, ValueError) as exc:
            return ModelUnavailableError(f"model {name} cannot be loaded: {exc}")
