"""``medroute worker``: load the models and the routing rules once, then run the Faust worker.

Two agents: HL7 reports (text model) and DICOM images (image model, blobs from the blob store).
Invalid rules, a model that does not load, an image model named in ``MEDROUTE_IMAGE_MODEL`` that is
not installed, or an unusable blob key stop start-up with a clear message and exit status 2, before
anything connects to Kafka. Without ``MEDROUTE_IMAGE_MODEL`` the default image bundle is loaded if
it is installed; otherwise (or with ``none``) images are decided on their metadata alone.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import faust
import structlog
from aiokafka import TopicPartition

from medroute import blobstore, eventloop, metrics
from medroute.config import CONTROL, KafkaSettings
from medroute.kafka.topics import ensure_topics
from medroute.logs import configure_logging
from medroute.records import ModelPromotion
from medroute.sealing import BlobError
from pipeline.agents import install
from pipeline.app import create_app
from pipeline.classify import Model
from pipeline.control import ModelSlot, PromotionFollower, read_promotions
from pipeline.dicom_feed import BlobSource, DicomFeed
from pipeline.hl7_feed import Hl7Feed
from pipeline.pixels import silence_pydicom
from pipeline.publish import FaustPublisher
from pipeline.routing import Rules
from pipeline.rules import RulesError, load_rules
from pipeline.rules_reload import RulesReloader
from pipeline.settings import WorkerSettings

log = structlog.get_logger(__name__)

EXIT_CONFIG = 2
TEXT_TASK, IMAGE_TASK = "text_classification", "image_classification"
ControlOffsets = dict[TopicPartition, int]


def load_classifier(name_or_path: str) -> Model:
    from models.text import TextClassifier  # heavy (ONNX Runtime): imported only where needed

    return TextClassifier.load(name_or_path)


class StartupError(Exception):
    """The worker cannot start as configured; the message says why (file:line for rules)."""


@dataclass(frozen=True)
class Startup:
    """What the worker loads once, before it connects to Kafka."""

    classifier: Model
    image_classifier: Model | None  # None: images are decided on metadata alone
    rules: Rules
    blobs: BlobSource


def load_image_classifier(settings: WorkerSettings) -> Model | None:
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
        blobs = blobstore.from_env()
    except BlobError as exc:
        raise StartupError(f"cannot open the blob store: {exc}") from None
    return Startup(classifier, image_classifier, rules, blobs)


def apply_startup_promotions(settings: WorkerSettings, promotions: dict[str, ModelPromotion]) -> WorkerSettings:
    """Settings with the models that the latest promotions name (they outrank the environment)."""
    text = promotions.get(TEXT_TASK)
    image = promotions.get(IMAGE_TASK)
    changes = {}
    if text is not None:
        changes["text_model"] = text.model
    if image is not None:
        changes["image_model_setting"] = image.model  # named, so it must load
    if changes:
        log.info("promoted_models_at_start", **{key: str(value) for key, value in changes.items()})
    return replace(settings, **changes)


def model_slots(
    settings: WorkerSettings, startup: Startup, texts: Hl7Feed, images: DicomFeed
) -> list[ModelSlot]:
    """The two swappable models; a candidate is loaded and checked against the rules before the swap."""

    def checked(kind: str, model: Model) -> Model:
        labels = {"hl7": texts.model.labels, kind: model.labels}
        if images.model is not None and kind != "dicom":
            labels["dicom"] = images.model.labels
        load_rules(settings.routes, labels=labels)  # rules naming labels the model lacks: refused
        return model

    def load_image(ref: str) -> Model:
        from models.image import ImageClassifier

        return checked("dicom", ImageClassifier.load(ref))

    slots = [
        ModelSlot(
            TEXT_TASK,
            startup.classifier.ref,
            lambda ref: checked("hl7", load_classifier(ref)),
            lambda model: setattr(texts, "model", model),
        )
    ]
    slots.append(
        ModelSlot(
            IMAGE_TASK,
            startup.image_classifier.ref if startup.image_classifier else "none",
            load_image,
            lambda model: setattr(images, "model", model),
        )
    )
    return slots


def _labels(texts: Hl7Feed, images: DicomFeed) -> dict[str, list[str]]:
    """The labels the models loaded now have, which reloaded rules are checked against."""
    labels = {"hl7": list(texts.model.labels)} if texts.model is not None else {}
    if images.model is not None:
        labels["dicom"] = list(images.model.labels)
    return labels


def build(
    kafka: KafkaSettings, settings: WorkerSettings, startup: Startup, control_offsets: ControlOffsets | None = None
) -> faust.App:
    app = create_app(kafka, settings)
    batching = {"batch_size": settings.batch_size, "batch_seconds": settings.batch_seconds}
    texts = Hl7Feed(startup.classifier, startup.rules)
    install(app, texts, **batching)
    images = DicomFeed(startup.image_classifier, startup.rules, startup.blobs)
    install(app, images, **batching)
    if settings.rules_reload_seconds > 0:
        reloader = RulesReloader(settings.routes, [texts, images], lambda: _labels(texts, images), FaustPublisher(app))

        @app.task
        async def follow_rules() -> None:
            await reloader.follow(settings.rules_reload_seconds)

    if control_offsets is not None:
        slots = model_slots(settings, startup, texts, images)
        follower = PromotionFollower(slots, FaustPublisher(app), ThreadPoolExecutor(1, thread_name_prefix="promote"))

        @app.task
        async def follow_promotions() -> None:
            await follower.follow(kafka, control_offsets)

    return app


async def read_control(kafka: KafkaSettings) -> tuple[dict[str, ModelPromotion], ControlOffsets]:
    """The latest promotions, and where to follow the control topic from (created if missing)."""
    await ensure_topics(kafka)
    return await asyncio.wait_for(read_promotions(kafka), timeout=60)


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
    try:
        promotions, control_offsets = asyncio.run(read_control(kafka))
    except Exception as exc:  # Kafka unreachable: the same exit as Faust's own failure to connect
        log.error("control_topic_unreadable", error=type(exc).__name__)
        print(f"medroute worker: cannot read {CONTROL} from {kafka.bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    promoted = apply_startup_promotions(settings, promotions)
    if promoted != settings:
        try:
            startup = load_startup(promoted)
        except StartupError as exc:  # this host lacks the promoted bundle: run as configured, loudly
            log.error("promotion_not_followed_at_start", error=str(exc))
    eventloop.use_fastest_loop()  # before the app exists: Faust and its Kafka clients bind to the current loop
    app = build(kafka, settings, startup, control_offsets)
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
    worker = faust.Worker(app, loglevel=settings.faust_log_level.lower(), quiet=True, redirect_stdouts=False)
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
