"""``medroute worker``: load the models and the routing rules once, then run the Faust worker.

Two agents: HL7 reports (text model) and DICOM images (image model, blobs from the blob store).
Invalid rules, a model that does not load, an image model named in ``MEDROUTE_IMAGE_MODEL`` that is
not installed, or an unusable blob key stop start-up with a clear message and exit status 2, before
anything connects to Kafka. Without ``MEDROUTE_IMAGE_MODEL`` the default image bundle is loaded if
it is installed; otherwise (or with ``none``) images are decided on their metadata alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import faust
import structlog

from medroute.blobstore import BlobError, BlobStore
from medroute.config import KafkaSettings
from medroute.logs import configure_logging
from pipeline import metrics
from pipeline.agents import dicom_feed, install, install_feed
from pipeline.app import create_app
from pipeline.classify import TextModel
from pipeline.imaging import BlobSource, ImageModel, ImageProcessor
from pipeline.pixels import silence_pydicom
from pipeline.process import Processor
from pipeline.routing import Rules
from pipeline.rules import RulesError, load_rules
from pipeline.settings import WorkerSettings

log = structlog.get_logger(__name__)

EXIT_CONFIG = 2


def load_classifier(name_or_path: str) -> TextModel:
    from models.text import TextClassifier  # heavy (ONNX Runtime): imported only where needed

    return TextClassifier.load(name_or_path)


class StartupError(Exception):
    """The worker cannot start as configured; the message says why (file:line for rules)."""


@dataclass(frozen=True)
class Startup:
    """What the worker loads once, before it connects to Kafka."""

    classifier: TextModel
    image_classifier: ImageModel | None  # None: images are decided on metadata alone
    rules: Rules
    blobs: BlobSource


def load_image_classifier(settings: WorkerSettings) -> ImageModel | None:
    """The image model as configured, None for metadata-only (see the module docstring)."""
    from models.registry import BundleNotFoundError, find_bundle

    name = settings.image_model
    if name is None:
        return None
    try:
        find_bundle(name)
    except BundleNotFoundError as exc:
        if settings.image_model_required:
            raise StartupError(f"cannot load image model {name!r} (MEDROUTE_IMAGE_MODEL): {exc}") from None
        log.warning("image_model_not_installed", model=name, images="metadata-only decisions")
        return None
    try:
        from models.image import ImageClassifier  # heavy: imported only where needed

        return ImageClassifier.load(name)
    except Exception as exc:
        raise StartupError(f"cannot load image model {name!r}: {exc}") from exc


def load_startup(settings: WorkerSettings) -> Startup:
    """Models, rules and blob store, checked; label names in the rules are checked against the models."""
    try:
        load_rules(settings.routes)  # syntax and structure first: fast, before the models load
        try:
            classifier = load_classifier(settings.text_model)
        except Exception as exc:
            raise StartupError(f"cannot load text model {settings.text_model!r}: {exc}") from exc
        image_classifier = load_image_classifier(settings)
        labels = {"hl7": classifier.labels}
        if image_classifier is not None:
            labels["dicom"] = image_classifier.labels
        rules = load_rules(settings.routes, labels=labels)
    except RulesError as exc:
        raise StartupError(str(exc)) from None
    try:
        blobs = BlobStore.from_env()
    except BlobError as exc:
        raise StartupError(f"cannot open the blob store: {exc}") from None
    return Startup(classifier, image_classifier, rules, blobs)


def build(kafka: KafkaSettings, settings: WorkerSettings, startup: Startup) -> faust.App:
    app = create_app(kafka, settings)
    batching = {"batch_size": settings.batch_size, "batch_seconds": settings.batch_seconds}
    install(app, Processor(startup.classifier, startup.rules), **batching)
    images = ImageProcessor(startup.image_classifier, startup.rules, startup.blobs)
    install_feed(app, dicom_feed(images), **batching)
    return app


def main() -> int:
    configure_logging("worker")
    silence_pydicom()
    settings = WorkerSettings()
    kafka = KafkaSettings()
    try:
        startup = load_startup(settings)
    except StartupError as exc:
        log.error("startup_refused", error=str(exc))
        print(f"medroute worker: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    app = build(kafka, settings, startup)
    if settings.metrics_port:
        metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)
    log.info(
        "worker_starting",
        model=startup.classifier.ref,
        image_model=startup.image_classifier.ref if startup.image_classifier else None,
        rules=str(settings.routes),
        rule_count=len(startup.rules.rules),
        bootstrap=kafka.bootstrap_servers,
        batch_size=settings.batch_size,
        batch_ms=settings.batch_ms,
    )
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.spinner = None  # a terminal progress spinner only garbles log files
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    if app.crashed:
        log.error("worker_crashed")
        return 1
    log.info("worker_stopped", exit_code=code)
    return code
