"""``medroute web``: load the worker's models and rules, the accounts, and serve the API and pages.

Refuses to start (exit status 2) when authentication is on and no account exists: set ``USERNAME`` and
``PASSWORD`` (an admin), add users with ``medroute web user add``, or turn it off with ``ENABLE_AUTH=false``.
"""

from __future__ import annotations

import signal
import ssl
import sys
from types import FrameType

import structlog
import uvicorn

from medroute.config import KafkaSettings
from medroute.logs import configure_logging
from pipeline.pixels import silence_pydicom
from pipeline.settings import WorkerSettings
from pipeline.worker import StartupError, load_startup
from web.app import build_services, create_app
from web.settings import WebSettings
from web.users import Accounts, AccountsError

log = structlog.get_logger(__name__)
EXIT_CONFIG = 2
# After SIGTERM, requests in flight get this long; then the server stops anyway. A client keeping an idle HTTPS
# connection open (a script's connection pool) would otherwise hold the stop for asyncio's TLS shutdown timeout
# (30 s): the server's close_notify waits for an answer nobody reads.
STOP_SECONDS = 5.0


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGINT outside uvicorn's handling (while loading, or re-raised by uvicorn once it has shut
    down gracefully) ends the process with status 0: a requested stop is a clean one."""
    raise SystemExit(0)


def serve() -> int:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    configure_logging("web")
    silence_pydicom()
    settings = WebSettings()
    if settings.tls_ca and not settings.tls_cert:
        print("medroute web: MEDROUTE_HTTP_TLS_CA (client certificates) needs MEDROUTE_HTTP_TLS_CERT", file=sys.stderr)
        return EXIT_CONFIG
    try:
        accounts = Accounts.load(
            settings.users_file, settings.tokens_file, settings.admin_username, settings.admin_password
        )
    except AccountsError as exc:
        print(f"medroute web: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if settings.auth and not len(accounts):
        print(
            "medroute web: authentication is on and there is no account: set USERNAME and PASSWORD (an admin), "
            f"add users with `medroute web user add NAME --role ROLE` ({settings.users_file}), "
            "or set ENABLE_AUTH=false",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        startup = load_startup(WorkerSettings())
    except StartupError as exc:
        print(f"medroute web: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    kafka = KafkaSettings() if settings.kafka else None
    app = create_app(build_services(settings, startup, accounts, kafka))
    log.info(
        "web_starting",
        url=f"{settings.scheme}://{settings.host}:{settings.port}",
        auth=settings.auth,
        client_certificates=bool(settings.tls_ca),
        models=[m.ref for m in (startup.classifier, startup.image_classifier) if m is not None],
        kafka=kafka.bootstrap_servers if kafka else None,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        # MEDROUTE_HTTP_TLS_CA: a client without a certificate this CA signed fails the TLS handshake.
        ssl_ca_certs=settings.tls_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_ca else ssl.CERT_NONE,
        access_log=False,  # request lines are not structlog events; /metrics counts requests
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=STOP_SECONDS,
    )
    return 0
