"""The app factory: the services of one process, the routes, the error answers, the upload limit.

Every error is an HTTP 4xx/5xx: on ``/api`` (and ``/healthz``, ``/readyz``) with a JSON body
``{"detail": reason}``, on pages as an HTML page (a 401 on a page sends the browser to the login page).
``/healthz``, ``/readyz`` and ``/metrics`` need no login (probes and Prometheus; they show no PHI).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medroute.config import KafkaSettings
from medroute.records import ModelPromotion
from pipeline.dicom_feed import BlobSource
from pipeline.worker import Startup
from web import api, pages
from web.auth import Authenticator, AuthError, LoginLimiter, Sessions
from web.classify import Classifier, ClassifyError
from web.csrf import Csrf
from web.live import Live
from web.outbox import KafkaUnavailableError, Outbox
from web.review import Review
from web.services import Services
from web.settings import WebSettings
from web.users import Accounts

log = structlog.get_logger(__name__)
JSON_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics", "/openapi.json")


class UploadLimit:
    """Refuses request bodies over ``limit`` bytes with 413, by Content-Length or while they stream."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        received = 0
        responded = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLargeError:
            if not responded:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse({"detail": f"upload larger than {self.limit} bytes (MEDROUTE_HTTP_MAX_UPLOAD)"}, 413)
        await response({"type": "http"}, _no_receive, send)


class _TooLargeError(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(JSON_PREFIXES)


def _problem(request: Request, status: int, reason: Any, headers: dict[str, str] | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": reason}, status, headers=headers)
    svc: Services = request.app.state.services
    return pages.render(request, svc, "error.html", status, status=status, reason=reason)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> Response:
        if exc.status == 401 and not _wants_json(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _problem(request, exc.status, exc.reason, headers)

    @app.exception_handler(ClassifyError)
    async def classify_error(request: Request, exc: ClassifyError) -> Response:
        return _problem(request, exc.status, exc.reason)

    @app.exception_handler(KafkaUnavailableError)
    async def kafka_error(request: Request, exc: KafkaUnavailableError) -> Response:
        return _problem(request, 503, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _problem(request, exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return _problem(request, 422, errors if _wants_json(request) else "; ".join(str(e["msg"]) for e in errors))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # The type only: a message could quote an upload's content.
        log.error("request_failed", path=request.url.path, error=type(exc).__name__)
        return _problem(request, 500, "internal error")


def build_services(
    settings: WebSettings,
    startup: Startup,
    accounts: Accounts,
    kafka: KafkaSettings | None,
    blobs: BlobSource | None = None,
) -> Services:
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="web")
    classifier = Classifier(startup, executor)
    outbox = Outbox(kafka)

    async def follow_promotion(promotion: ModelPromotion) -> None:
        await _follow_promotion(classifier, executor, promotion)

    live = Live(kafka, settings.recent, follow_promotion)
    return Services(
        settings=settings,
        kafka=kafka,
        classifier=classifier,
        auth=Authenticator(settings.auth, accounts, Sessions(settings.session_seconds)),
        limiter=LoginLimiter(settings.login_attempts, settings.login_window),
        csrf=Csrf(settings.secure_cookies),
        outbox=outbox,
        live=live,
        review=Review(live, outbox, blobs or startup.blobs, executor),
        executor=executor,
    )


async def _follow_promotion(classifier: Classifier, executor: ThreadPoolExecutor, promotion: ModelPromotion) -> None:
    """Classify with the promoted version, as the workers do (a bundle missing here is logged, not fatal)."""
    current = classifier.text_model if promotion.task == "text_classification" else classifier.image_model
    if current is not None and current.ref == promotion.model:
        return
    loop = asyncio.get_running_loop()
    try:
        if promotion.task == "text_classification":
            from models.text import TextClassifier

            model: Any = await loop.run_in_executor(executor, TextClassifier.load, promotion.model)
        else:
            from models.image import ImageClassifier

            model = await loop.run_in_executor(executor, ImageClassifier.load, promotion.model)
    except Exception as exc:
        log.error("promotion_not_followed", model=promotion.model, error=str(exc)[:300])
        return
    classifier.swap(promotion.task, model)
    log.info("promotion_followed", task=promotion.task, model=promotion.model)


def create_app(svc: Services) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.outbox.start()
        svc.live.start()
        try:
            yield
        finally:
            await svc.live.stop()
            await svc.outbox.stop()

    app = FastAPI(
        title="medroute",
        version="1",
        summary="Classify HL7 v2 messages, documents and images with the local models; the routing decision.",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from the internet: not here
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = svc
    _install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")

    @app.get("/healthz", summary="The process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Models loaded and Kafka reachable (503 otherwise)")
    async def readyz() -> JSONResponse:
        kafka = None if svc.kafka is None else svc.live.connected and svc.outbox.connected
        ready = bool(svc.classifier.loaded) and kafka is not False
        body = {"ready": ready, "models": svc.classifier.loaded, "kafka": kafka}
        return JSONResponse(body, 200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(UploadLimit, limit=svc.settings.max_upload)
    return app
