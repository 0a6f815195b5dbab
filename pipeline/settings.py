"""Worker settings from the environment (``MEDROUTE_*``); Kafka itself is ``medroute.config.KafkaSettings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import env_int, env_str
from pipeline.rules import routes_path


def _positive(name: str, default: int, minimum: int) -> int:
    value = env_int(name, default)
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    text_model: str = field(default_factory=lambda: env_str("MEDROUTE_TEXT_MODEL", "doctype-en") or "doctype-en")
    routes: Path = field(default_factory=routes_path)
    batch_size: int = field(default_factory=lambda: _positive("MEDROUTE_BATCH_SIZE", 16, 1))
    batch_ms: int = field(default_factory=lambda: _positive("MEDROUTE_BATCH_MS", 20, 1))
    store: str = field(default_factory=lambda: env_str("MEDROUTE_WORKER_STORE", "memory://") or "memory://")
    web_port: int = field(default_factory=lambda: _positive("MEDROUTE_WORKER_WEB_PORT", 0, 0))  # 0: no Faust web
    metrics_port: int = field(default_factory=lambda: _positive("MEDROUTE_WORKER_METRICS_PORT", 0, 0))  # 0: off
    metrics_host: str = field(default_factory=lambda: env_str("MEDROUTE_METRICS_HOST", "127.0.0.1") or "127.0.0.1")

    @property
    def batch_seconds(self) -> float:
        return self.batch_ms / 1000.0
