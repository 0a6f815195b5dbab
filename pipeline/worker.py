"""``medroute worker``: load the model and the routing rules once, then run the Faust worker.

Invalid rules or a model that does not load stop start-up with a clear message and exit status 2,
before anything connects to Kafka.
"""

from __future__ import annotations

import sys

import faust
import structlog

from medroute.config import KafkaSettings
from medroute.logs import configure_logging
from pipeline import metrics
from pipeline.agents import install
from pipeline.app import create_app
from pipeline.classify import TextModel
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


def load_startup(settings: WorkerSettings) -> tuple[TextModel, Rules]:
    """The model and the rules, checked; label names in the rules are checked against the model."""
    try:
        load_rules(settings.routes)  # syntax and structure first: fast, before the model loads
        try:
            classifier = load_classifier(settings.text_model)
        except Exception as exc:
            raise StartupError(f"cannot load text model {settings.text_model!r}: {exc}") from exc
        return classifier, load_rules(settings.routes, labels=classifier.labels)
    except RulesError as exc:
        raise StartupError(str(exc)) from None


def build(kafka: KafkaSettings, settings: WorkerSettings, classifier: TextModel, rules: Rules) -> faust.App:
    app = create_app(kafka, settings)
    install(app, Processor(classifier, rules), batch_size=settings.batch_size, batch_seconds=settings.batch_seconds)
    return app


def main() -> int:
    configure_logging("worker")
    settings = WorkerSettings()
    kafka = KafkaSettings()
    try:
        classifier, rules = load_startup(settings)
    except StartupError as exc:
        log.error("startup_refused", error=str(exc))
        print(f"medroute worker: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    app = build(kafka, settings, classifier, rules)
    if settings.metrics_port:
        metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)
    log.info(
        "worker_starting",
        model=classifier.ref,
        rules=str(settings.routes),
        rule_count=len(rules.rules),
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
