"""The REST API under ``/api`` (JSON in, JSON out; every error a 4xx/5xx with ``{"detail": reason}``).

``/api/classify`` takes ``multipart/form-data`` (``file``, ``task_type``, optional ``threshold``; or a
``text`` field) or JSON ``{"text": ..., "task_type": ..., "threshold": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, Literal

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from medroute.logs import hash_id
from medroute.records import AuditEvent, Feedback
from models.bundle import BundleError, load_manifest
from models.registry import find_bundle, list_bundles
from pipeline.forward.status import pending_counts, status_row
from tools.operations.promote import promotion_for, publish
from tools.operations.redrive import Redrive, audit_event, code_of, plan, send_again
from web import metrics
from web.auth import AuthError
from web.classify import ClassifyError
from web.classify import Request as ClassifyRequest
from web.csrf import HEADER as CSRF_HEADER
from web.services import Services, services
from web.users import Account, Role

router = APIRouter(prefix="/api")
ACTOR = "web"
KEEPALIVE_SECONDS = 15.0
PENDING_TIMEOUT = 5.0  # a console page should not hang on a broker that does not answer
LETTERS_TIMEOUT = 20.0  # reading forward.deadletter to its end, and the ledger since its oldest letter
log = structlog.get_logger(__name__)
Task = Literal["auto", "text_classification", "image_classification"]


class TextRequest(BaseModel):
    text: str = Field(description="the document's text (any language; Chinese picks triage-zh under auto)")
    task_type: Task = "auto"
    threshold: float | None = Field(None, ge=0, le=1, description="replaces the model's thresholds")


class LabelScore(BaseModel):
    label: str
    confidence: float


class Decision(BaseModel):
    rule: str
    destinations: list[str]
    message_type: str
    reason: str | None = None


class ClassifyResult(BaseModel):
    kind: str = Field(description="text | pdf | hl7 | dicom | image")
    model: str | None = Field(description="name@version; null when decided on metadata alone")
    label: str | None
    confidence: float | None
    below_threshold: bool | None
    labels: list[LabelScore]
    decision: Decision
    latency_ms: float


class Problem(BaseModel):
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text}
    for status, text in {
        401: "not logged in (no session cookie, no or unknown Bearer token)",
        403: "the account's role may not do this, or the CSRF token is missing",
        413: "upload larger than MEDROUTE_HTTP_MAX_UPLOAD",
        415: "not a kind of content medroute reads",
        422: "unreadable or unsuitable content, or invalid fields",
        503: "a model or Kafka is not available",
    }.items()
}

_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "text": {"type": "string"},
        "task_type": {"type": "string", "enum": ["auto", "text_classification", "image_classification"]},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            "application/json": {"schema": TextRequest.model_json_schema()},
        },
    }
}


Svc = Annotated[Services, Depends(services)]


def account(role: Role, csrf: str = "") -> Any:
    """A dependency: the account of the request, with at least ``role``. ``csrf="always"``: a browser's call
    (not one with an API token) must carry the page's CSRF token in ``X-CSRF-Token`` (it changes something);
    ``csrf="session"``: only when a session cookie authenticates it (classification changes nothing, and a
    script without credentials on a server with authentication off needs no token)."""

    def dependency(request: Request, svc: Svc) -> Account:
        found = svc.auth.require(request, role)
        needed = found.via == "session" if csrf == "session" else csrf == "always" and found.via != "token"
        if needed and not svc.csrf.valid(request, request.headers.get(CSRF_HEADER)):
            raise AuthError(403, "CSRF token missing or wrong (send the page's token in X-CSRF-Token)")
        return found

    return Depends(dependency)


Viewer = Annotated[Account, account(Role.viewer)]
Reviewer = Annotated[Account, account(Role.reviewer)]
Admin = Annotated[Account, account(Role.admin)]
Classifying = Annotated[Account, account(Role.viewer, csrf="session")]
Answering = Annotated[Account, account(Role.reviewer, csrf="always")]
Promoting = Annotated[Account, account(Role.admin, csrf="always")]


async def _classify_request(request: Request) -> ClassifyRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = TextRequest.model_validate_json(await request.body())
        except ValueError as exc:
            raise ClassifyError(422, f"invalid JSON body: {_first_error(exc)}") from None
        return ClassifyRequest(task=body.task_type, text=body.text, threshold=body.threshold)
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ClassifyError(415, 'send multipart/form-data (file, task_type) or application/json ({"text": ...})')
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # malformed multipart bodies raise several types
        raise ClassifyError(422, f"unreadable form ({type(exc).__name__})") from None
    task = form.get("task_type") or "auto"
    threshold = _threshold(form.get("threshold"))
    upload = form.get("file")
    text = form.get("text")
    if isinstance(upload, UploadFile):
        data = await upload.read()
        return ClassifyRequest(task=str(task), data=data, name=upload.filename or "upload", threshold=threshold)
    if isinstance(text, str) and text:
        return ClassifyRequest(task=str(task), text=text, threshold=threshold)
    if isinstance(upload, str) and upload:  # a "file" field sent as plain text
        return ClassifyRequest(task=str(task), data=upload.encode("utf-8"), name="upload", threshold=threshold)
    raise ClassifyError(422, "no file: send the document as multipart field 'file' (or 'text')")


def _threshold(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ClassifyError(422, "threshold must be a number between 0 and 1") from None


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"
    return type(exc).__name__


@router.post(
    "/classify",
    response_model=ClassifyResult,
    responses=ERRORS,
    openapi_extra=CLASSIFY_BODY,
    summary="Classify a document, message or image; the decision the routing rules would take",
)
async def classify(request: Request, svc: Svc, who: Classifying) -> JSONResponse:
    started = time.perf_counter()
    kind = "unknown"
    try:
        result = await svc.classifier.classify(await _classify_request(request))
    except ClassifyError as exc:
        metrics.REQUESTS.labels(kind=kind, status=str(exc.status)).inc()
        raise
    kind = result["kind"]
    metrics.REQUESTS.labels(kind=kind, status="200").inc()
    metrics.LATENCY.observe(time.perf_counter() - started)
    details = {"user": who.name, "kind": kind, "model": result["model"], "label": result["label"]}
    svc.outbox.audit_later(AuditEvent(action="classify", actor=ACTOR, message_id=None, details=details))
    return JSONResponse(result)


@router.get("/models", summary="Installed model bundles; which the server classifies with")
async def models(svc: Svc, _: Viewer) -> list[dict[str, Any]]:
    return model_list(svc)


def model_list(svc: Services) -> list[dict[str, Any]]:
    active = set(svc.classifier.loaded)
    return [
        {
            "model": bundle.ref,
            "name": bundle.name,
            "version": bundle.version,
            "task": bundle.manifest["task"],
            "labels": bundle.labels,
            "metrics": bundle.manifest.get("metrics", {}),
            "active": bundle.ref in active,
        }
        for bundle in list_bundles()
    ]


class PromoteRequest(BaseModel):
    model: str = Field(description="name@version of an installed bundle")


@router.post("/models/promote", responses=ERRORS, summary="Switch running workers to a model version (admin)")
async def promote(body: PromoteRequest, svc: Svc, who: Promoting) -> dict[str, Any]:
    return await promote_model(svc, body.model, who)


async def promote_model(svc: Services, ref: str, who: Account) -> dict[str, Any]:
    """Publish a promotion (and its audit event, naming the user), as ``medroute promote`` does."""
    if svc.kafka is None:
        raise ClassifyError(503, "this server runs without Kafka (MEDROUTE_WEB_KAFKA=0)")
    try:
        find_bundle(ref)
        promotion = promotion_for(ref, who.name, None)
    except BundleError as exc:
        raise ClassifyError(422, str(exc).split(" (searched")[0]) from None
    try:
        await asyncio.wait_for(publish(svc.kafka, promotion, None), timeout=30)
    except Exception as exc:
        raise ClassifyError(503, f"Kafka did not take the promotion ({type(exc).__name__})") from None
    return {"task": promotion.task, "model": promotion.model, "by": promotion.by, "command_id": promotion.command_id}


@router.get("/decisions", summary="Recent routing decisions, newest first")
async def decisions(
    svc: Svc,
    _: Viewer,
    label: str | None = None,
    destination: str | None = None,
    since: Annotated[str | None, Query(description="ISO-8601 UTC, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO-8601 UTC, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> list[dict[str, Any]]:
    return svc.live.find_decisions(label, destination, since, until, limit)


@router.get("/decisions/counts", summary="Decisions per minute by label and destination")
async def counts(svc: Svc, _: Viewer, minutes: Annotated[int, Query(ge=1, le=1440)] = 60) -> list[dict[str, Any]]:
    return svc.live.counts(minutes)


LIVE_FIELDS = ("message_id", "kind", "message_type", "model", "label", "confidence", "rule", "destinations")


@router.get(
    "/decisions/stream", summary="Server-sent events: each new routing decision", response_class=StreamingResponse
)
async def stream(request: Request, svc: Svc, _: Viewer):
    queue = svc.live.subscribe()

    async def events():
        try:
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    decision = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                shown = {name: decision.get(name) for name in (*LIVE_FIELDS, "decided_at")}
                yield f"event: decision\ndata: {json.dumps(shown, ensure_ascii=False)}\n\n"
        finally:
            svc.live.unsubscribe(queue)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/review", summary="Decisions routed to review that no reviewer has answered (reviewer)")
async def review_queue(
    svc: Svc, _: Reviewer, limit: Annotated[int, Query(ge=1, le=5000)] = 200
) -> list[dict[str, Any]]:
    return svc.live.review_queue(limit)


class Answer(BaseModel):
    label: str = Field(description="the label the reviewer confirms or sets (one of the model's labels)")


@router.post("/review/{message_id}", responses=ERRORS, summary="Accept or correct the label of a reviewed item")
async def answer(message_id: str, body: Answer, svc: Svc, who: Answering) -> dict[str, Any]:
    feedback = await answer_item(svc, message_id, body.label, who)
    return {"message_id": message_id, "label": feedback.label, "accepted": feedback.accepted, "by": feedback.by}


async def answer_item(svc: Services, message_id: str, label: str, who: Account) -> Feedback:
    decision = svc.live.latest.get(message_id)
    if decision is None:
        raise ClassifyError(404, "no such decision among the recent ones")
    labels = labels_of(decision.get("model"))
    if label not in labels:
        raise ClassifyError(422, f"unknown label {label!r} for {decision.get('model')}")
    return await svc.review.answer(message_id, label, who)


def labels_of(model_ref: str | None) -> list[str]:
    """The labels a reviewer may choose: those of the model that decided (none when it is not installed here)."""
    if not model_ref:
        return []
    try:
        return list(load_manifest(find_bundle(model_ref))["labels"])
    except BundleError:
        return []


@router.get("/audit", summary="Recent audit events, newest first (admin)")
async def audit(
    svc: Svc,
    _: Admin,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    return svc.live.audit_events(action, limit)


@router.get("/destinations", summary="Each destination's forwarding: delivered, pending, retrying, breaker")
async def destinations(svc: Svc, _: Viewer) -> list[dict[str, Any]]:
    return await destination_rows(svc)


async def destination_rows(svc: Services) -> list[dict[str, Any]]:
    """Every destination whose forwarder has reported, from the followed snapshots; ``pending`` is asked of
    Kafka now (None when it cannot be: no Kafka, or it did not answer)."""
    snapshots = dict(svc.live.destinations)
    pending: dict[str, int | None] = {}
    if svc.kafka is not None and snapshots:
        try:
            pending = await asyncio.wait_for(pending_counts(svc.kafka, sorted(snapshots)), PENDING_TIMEOUT)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("destination_pending_unavailable", error=type(exc).__name__)
    return [status_row(name, snapshots[name], pending.get(name)) for name in sorted(snapshots)]


RedriveReason = Literal["refused", "attempts_exhausted"]  # tools.operations.redrive.REASONS, for the schema


class RedriveRequest(BaseModel):
    reason: RedriveReason | None = Field(None, description="only the letters of this reason (default: all)")


@router.get("/destinations/{name}/deadletters", responses=ERRORS,
            summary="A destination's dead letters that a redrive would send again, newest per message")  # fmt: skip
async def dead_letters(name: str, svc: Svc, _: Viewer, reason: RedriveReason | None = None) -> list[dict[str, Any]]:
    return [letter_row(r) for r in await planned_redrives(svc, name, reason)]


@router.post("/destinations/{name}/redrive", responses=ERRORS,
             summary="Send a destination's dead letters again, once the cause is mended (admin)")  # fmt: skip
async def redrive(name: str, body: RedriveRequest, svc: Svc, who: Promoting) -> dict[str, Any]:
    return await redrive_letters(svc, name, body.reason, who)


def letter_row(redrive: Redrive) -> dict[str, Any]:
    letter = redrive.letter
    return {"message_id": letter.message_id, "at": letter.at, "kind": letter.kind, "reason": letter.reason,
            "attempts": letter.attempts, "code": code_of(letter)}  # fmt: skip


async def planned_redrives(svc: Services, name: str, reason: str | None) -> list[Redrive]:
    """As ``medroute redrive`` chooses them: the newest letter per message, less what a redrive delivered."""
    if svc.kafka is None:
        raise ClassifyError(503, "this server runs without Kafka (MEDROUTE_WEB_KAFKA=0)")
    try:
        return await asyncio.wait_for(plan(svc.kafka, name, reason, None), LETTERS_TIMEOUT)
    except (KafkaError, OSError, LookupError, TimeoutError) as exc:
        raise ClassifyError(503, f"Kafka did not answer ({type(exc).__name__})") from None


async def redrive_letters(svc: Services, name: str, reason: str | None, who: Account) -> dict[str, Any]:
    redrives = await planned_redrives(svc, name, reason)
    if redrives:
        assert svc.kafka is not None  # planned_redrives refused otherwise
        try:
            await send_again(svc.kafka, redrives, audit_event(name, reason, None, who.name, len(redrives)))
        except (KafkaError, OSError) as exc:
            raise ClassifyError(503, f"Kafka did not take the decisions ({type(exc).__name__})") from None
    return {"destination": name, "sent": len(redrives)}


def login_keys(request: Request, name: str) -> tuple[str, str]:
    """What failed logins are counted by: the client's address, and the (hashed) account name."""
    client = request.client.host if request.client else "unknown"
    return f"ip:{client}", f"name:{hash_id(name.lower())}"
