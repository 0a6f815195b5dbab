"""Worker settings from the environment (``MEDROUTE_*``); Kafka itself is ``medroute.config.KafkaSettings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import env_float, env_int, env_str
from pipeline.rules import routes_path

DEFAULT_IMAGE_MODEL = "cxr-pneumonia"
NO_MODEL = "none"


def _positive(name: str, default: int, minimum: int) -> int:
    value = env_int(name, default)
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}")
    return value


DEFAULT_APP_ID = "medroute-worker"


@dataclass(frozen=True)
class WorkerSettings:
    text_model: str = field(default_factory=lambda: env_str("MEDROUTE_TEXT_MODEL", "doctype-en") or "doctype-en")
    # Unset: the default bundle if it is installed, else metadata-only decisions for images;
    # set: that bundle or the worker does not start; "none": metadata-only on purpose.
    image_model_setting: str | None = field(default_factory=lambda: env_str("MEDROUTE_IMAGE_MODEL"))
    routes: Path = field(default_factory=routes_path)
    batch_size: int = field(default_factory=lambda: _positive("MEDROUTE_BATCH_SIZE", 64, 1))
    batch_ms: int = field(default_factory=lambda: _positive("MEDROUTE_BATCH_MS", 20, 1))
    # The Faust app id: the consumer group and the prefix of the table changelog topics. Separate ids
    # give separate worker pools (e.g. per site); workers of one pool must share it.
    app_id: str = field(default_factory=lambda: env_str("MEDROUTE_WORKER_APP_ID") or DEFAULT_APP_ID)
    store: str = field(default_factory=lambda: env_str("MEDROUTE_WORKER_STORE", "memory://") or "memory://")
    web_port: int = field(default_factory=lambda: _positive("MEDROUTE_WORKER_WEB_PORT", 0, 0))  # 0: no Faust web
    metrics_port: int = field(default_factory=lambda: _positive("MEDROUTE_WORKER_METRICS_PORT", 0, 0))  # 0: off
    # How often the routing rules file is checked for changes (0: never; a change then needs a restart).
    rules_reload_seconds: float = field(default_factory=lambda: env_float("MEDROUTE_ROUTES_RELOAD_SECONDS", 2.0))
    metrics_host: str = field(default_factory=lambda: env_str("MEDROUTE_METRICS_HOST", "127.0.0.1") or "127.0.0.1")

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
