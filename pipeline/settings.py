"""Worker settings from the environment (``MEDROUTE_*``); Kafka itself is ``medroute.config.KafkaSettings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import METRICS_HOST
from pipeline.rules import WORKER, routes_path

DEFAULT_IMAGE_MODEL = "cxr-pneumonia"
NO_MODEL = "none"
DEFAULT_APP_ID = "medroute-worker"

TEXT_MODEL = WORKER("MEDROUTE_TEXT_MODEL", "doctype-en", "the text model bundle (name, `name@version` or a "
                    "directory)", processes=("worker", "web", "tools"))
IMAGE_MODEL = WORKER("MEDROUTE_IMAGE_MODEL", None, "the image model for chest radiographs; a named bundle that is "
                     "missing stops start-up; `none`: images decided on metadata only",
                     shown_default=f"`{DEFAULT_IMAGE_MODEL}` if installed", processes=("worker", "web", "tools"))
BATCH_SIZE = WORKER("MEDROUTE_BATCH_SIZE", 64, "micro-batch: up to this many records ...", minimum=1)
BATCH_MS = WORKER("MEDROUTE_BATCH_MS", 20, "... or what arrived within this many ms", minimum=1)
WORKER_APP_ID = WORKER("MEDROUTE_WORKER_APP_ID", DEFAULT_APP_ID, "the worker pool: Kafka consumer group and table "
                       "changelog prefix; every worker of one pool shares it")
WORKER_STORE = WORKER("MEDROUTE_WORKER_STORE", "memory://", "Faust table store (`memory://` or `rocksdb://`)")
WORKER_WEB_PORT = WORKER("MEDROUTE_WORKER_WEB_PORT", 0, "port of Faust's web server (0: off)", minimum=0)
WORKER_METRICS_PORT = WORKER("MEDROUTE_WORKER_METRICS_PORT", 0, "the worker's Prometheus endpoint (0: off)", minimum=0)
# Faust's and aiokafka's own logs (rebalances, fetches, commits): DEBUG is very verbose (the soak's
# `--debug-workers` uses it); WARNING keeps a production log readable. aiokafka's DEBUG lines show the start of
# each produce request's bytes (decisions, which carry no PHI, but still): not for a site's real traffic.
FAUST_LOG_LEVEL = WORKER(
    "MEDROUTE_WORKER_FAUST_LOG_LEVEL",
    "WARNING",
    "log level of Faust and its Kafka client in the worker (DEBUG, INFO, WARNING, ERROR); DEBUG shows the start of "
    "produced records' bytes: for tests and the soak only",
)
ROUTES_RELOAD_SECONDS = WORKER("MEDROUTE_ROUTES_RELOAD_SECONDS", 2.0, "how often the worker checks the routing "
                               "rules file for changes (0: never)", minimum=0)


@dataclass(frozen=True)
class WorkerSettings:
    text_model: str = field(default_factory=TEXT_MODEL)
    # Unset: the default bundle if it is installed, else metadata-only decisions for images;
    # set: that bundle or the worker does not start; "none": metadata-only on purpose.
    image_model_setting: str | None = field(default_factory=IMAGE_MODEL)
    routes: Path = field(default_factory=routes_path)
    batch_size: int = field(default_factory=BATCH_SIZE)
    batch_ms: int = field(default_factory=BATCH_MS)
    # The Faust app id: the consumer group and the prefix of the table changelog topics. Separate ids
    # give separate worker pools (e.g. per site); workers of one pool must share it.
    app_id: str = field(default_factory=WORKER_APP_ID)
    store: str = field(default_factory=WORKER_STORE)
    web_port: int = field(default_factory=WORKER_WEB_PORT)  # 0: no Faust web
    metrics_port: int = field(default_factory=WORKER_METRICS_PORT)  # 0: off
    # How often the routing rules file is checked for changes (0: never; a change then needs a restart).
    rules_reload_seconds: float = field(default_factory=ROUTES_RELOAD_SECONDS)
    metrics_host: str = field(default_factory=METRICS_HOST)
    faust_log_level: str = field(default_factory=FAUST_LOG_LEVEL)

    @property
    def image_model(self) -> str | None:
        """The image bundle to load (name, name@version or directory); None for metadata-only."""
        setting = (self.image_model_setting or DEFAULT_IMAGE_MODEL).strip()
        return None if setting.lower() == NO_MODEL else setting

    @property
    def image_model_required(self) -> bool:
        """Whether a missing image bundle stops start-up (it was named explicitly)."""
        return self.image_model_setting is not None

    @property
    def batch_seconds(self) -> float:
        return self.batch_ms / 1000.0
