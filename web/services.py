"""Everything a request handler may use, built once per process by :func:`web.app.create_app`."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from starlette.requests import Request

from medroute.config import KafkaSettings
from web.auth import Authenticator, LoginLimiter
from web.classify import Classifier
from web.csrf import Csrf
from web.live import Live
from web.outbox import Outbox
from web.review import Review
from web.settings import WebSettings


@dataclass
class Services:
    settings: WebSettings
    kafka: KafkaSettings | None
    classifier: Classifier
    auth: Authenticator
    limiter: LoginLimiter
    csrf: Csrf
    outbox: Outbox
    live: Live
    review: Review
    executor: Executor


def services(request: Request) -> Services:
    return request.app.state.services
