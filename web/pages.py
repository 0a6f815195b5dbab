"""The server-rendered pages: classify, live view, review queue, destinations, audit log, models, replay diffs,
login.

Every form carries the CSRF token (:mod:`web.csrf`); every page shows who is logged in and, when
authentication is off, a banner that says so. URLs carry medroute's own random message and replay ids,
never patient identifiers.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from medroute.config import home_dir
from medroute.logs import hash_id
from medroute.records import AuditEvent
from tools.operations.redrive import REASONS
from web import metrics
from web.api import (
    answer_item,
    destination_rows,
    labels_of,
    letter_row,
    login_keys,
    model_list,
    planned_redrives,
    promote_model,
    redrive_letters,
)
from web.auth import SESSION_COOKIE, AuthError
from web.classify import ClassifyError
from web.services import Services, services
from web.users import Account, Role

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
router = APIRouter(include_in_schema=False)
Svc = Annotated[Services, Depends(services)]
ACTOR = "web"


def render(request: Request, svc: Services, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    account = svc.auth.account_of(request)
    token, new_anchor = svc.csrf.token_for(request)
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {"account": account, "auth_on": svc.settings.auth, "Role": Role, "csrf_token": token, **context},
        status_code=status_code,
    )
    if new_anchor is not None:
        svc.csrf.set_anchor(response, new_anchor)
    response.headers["Cache-Control"] = "no-store"  # pages may show report text
    return response


def page_account(request: Request, svc: Services, role: Role) -> Account:
    return svc.auth.require(request, role)


def check_form(request: Request, svc: Services, token: str) -> None:
    if not svc.csrf.valid(request, token):
        raise AuthError(403, "the form's CSRF token is missing or stale: reload the page and try again")


# -- login -----------------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path of this site: not ``//host`` nor ``/\\host`` (which browsers read as another host)."""
    return target if target and target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


@router.get("/login")
async def login_page(request: Request, svc: Svc, next: str = "/") -> HTMLResponse:
    return render(request, svc, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(
    request: Request,
    svc: Svc,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    check_form(request, svc, csrf_token)
    keys = login_keys(request, username)
    wait = svc.limiter.retry_after(*keys)
    if wait:
        metrics.LOGINS_REFUSED.inc()
        response = render(
            request,
            svc,
            "login.html",
            429,
            next=_safe_next(next),
            error=f"Too many failed logins: try again in {wait} s.",
        )
        response.headers["Retry-After"] = str(wait)
        return response
    loop = asyncio.get_running_loop()
    account = await loop.run_in_executor(svc.executor, svc.auth.accounts.verify_password, username, password)
    if account is None:
        svc.limiter.failed(*keys)
        metrics.LOGIN_FAILURES.inc()
        # The name only hashed: a password typed into the name field must not reach a log.
        svc.outbox.audit_later(
            AuditEvent(action="login_failed", actor=ACTOR, message_id=None, details={"name": hash_id(username)})
        )
        return render(request, svc, "login.html", 401, next=_safe_next(next), error="Wrong name or password.")
    svc.limiter.succeeded(keys[1])
    token = svc.auth.sessions.create(account)
    svc.outbox.audit_later(AuditEvent(action="login", actor=ACTOR, message_id=None, details={"user": account.name}))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=svc.settings.session_seconds,
        httponly=True,
        samesite="strict",
        secure=svc.settings.secure_cookies,
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request, svc: Svc, csrf_token: Annotated[str, Form()] = "") -> Response:
    check_form(request, svc, csrf_token)
    account = svc.auth.account_of(request)
    svc.auth.sessions.end(request.cookies.get(SESSION_COOKIE))
    if account is not None:
        svc.outbox.audit_later(
            AuditEvent(action="logout", actor=ACTOR, message_id=None, details={"user": account.name})
        )
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- pages -----------------------------------------------------------------------------------------------


@router.get("/")
async def classify_page(request: Request, svc: Svc) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    return render(request, svc, "classify.html", models=svc.classifier.loaded, max_upload=svc.settings.max_upload)


@router.get("/live")
async def live_page(request: Request, svc: Svc) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    recent = svc.live.find_decisions(limit=50)
    return render(
        request, svc, "live.html", recent=recent, counts=json.dumps(svc.live.counts(60)), connected=svc.live.connected
    )


@router.get("/review")
async def review_page(request: Request, svc: Svc) -> HTMLResponse:
    page_account(request, svc, Role.reviewer)
    return render(request, svc, "review.html", items=svc.live.review_queue(), connected=svc.live.connected)


@router.get("/review/{message_id}")
async def review_item_page(request: Request, svc: Svc, message_id: str) -> HTMLResponse:
    account = page_account(request, svc, Role.reviewer)
    item = await svc.review.open(message_id, account)
    if item is None:
        return render(request, svc, "error.html", 404, status=404, reason="No such decision among the recent ones.")
    answered = svc.live.feedback.get(message_id)
    labels = labels_of(item.decision.get("model"))
    return render(request, svc, "review_item.html", item=item, labels=labels, answered=answered)


@router.post("/review/{message_id}")
async def review_answer(
    request: Request,
    svc: Svc,
    message_id: str,
    label: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    account = page_account(request, svc, Role.reviewer)
    check_form(request, svc, csrf_token)
    await answer_item(svc, message_id, label, account)
    return RedirectResponse("/review", status_code=303)


@router.get("/destinations")
async def destinations_page(request: Request, svc: Svc) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    rows = await destination_rows(svc)
    return render(request, svc, "destinations.html", rows=rows, connected=svc.live.connected, now=time.time())


@router.get("/destinations/{name}")
async def destination_page(request: Request, svc: Svc, name: str, sent: int | None = None) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    letters = [letter_row(r) for r in await planned_redrives(svc, name, None)]
    return render(request, svc, "destination.html", name=name, letters=letters, sent=sent)


@router.post("/destinations/{name}/redrive")
async def redrive_form(
    request: Request, svc: Svc, name: str, reason: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = ""
) -> Response:
    account = page_account(request, svc, Role.admin)
    check_form(request, svc, csrf_token)
    if reason not in ("", *REASONS):
        raise ClassifyError(422, f"no such reason: {reason!r}")
    result = await redrive_letters(svc, name, reason or None, account)
    return RedirectResponse(f"/destinations/{quote(name)}?sent={result['sent']}", status_code=303)


@router.get("/audit")
async def audit_page(request: Request, svc: Svc, action: str | None = None) -> HTMLResponse:
    page_account(request, svc, Role.admin)
    events = svc.live.audit_events(action or None, 500)
    return render(request, svc, "audit.html", events=events, action=action or "")


@router.get("/models")
async def models_page(request: Request, svc: Svc, promoted: str | None = None) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    return render(request, svc, "models.html", models=model_list(svc), promoted=promoted)


@router.post("/models/promote")
async def promote_form(
    request: Request, svc: Svc, model: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = ""
) -> Response:
    account = page_account(request, svc, Role.admin)
    check_form(request, svc, csrf_token)
    result = await promote_model(svc, model, account)
    return RedirectResponse(f"/models?promoted={quote(result['model'])}", status_code=303)


# -- replay diffs ----------------------------------------------------------------------------------------


def _diff_dir(replay_id: str) -> Path:
    return home_dir() / "web" / "replay-diffs" / replay_id


@router.get("/replays")
async def replays_page(request: Request, svc: Svc) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    from tools.operations.replay.checkpoint import latest_checkpoints

    replays = []
    if svc.kafka is not None:
        try:
            replays = await asyncio.wait_for(latest_checkpoints(svc.kafka, timeout=10), timeout=20)
        except Exception as exc:
            raise ClassifyError(503, f"cannot read the replay checkpoints ({type(exc).__name__})") from None
    return render(request, svc, "replays.html", replays=sorted(replays, key=lambda c: c.started_at, reverse=True))


@router.get("/replays/{replay_id}")
async def replay_diff_page(request: Request, svc: Svc, replay_id: str) -> HTMLResponse:
    page_account(request, svc, Role.viewer)
    from tools.operations.replay.diff import summary_lines
    from tools.operations.replay.diff_command import gather, write_outputs

    if svc.kafka is None or not replay_id.replace("-", "").isalnum():
        return render(request, svc, "error.html", 404, status=404, reason="No such replay.")
    args = SimpleNamespace(replay_id=replay_id, examples=5, live_topic="routing.decisions")
    try:
        _, report = await asyncio.wait_for(gather(args), timeout=120)
    except LookupError:
        return render(request, svc, "error.html", 404, status=404, reason="No such replay.")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(svc.executor, write_outputs, report, _diff_dir(replay_id))
    return render(request, svc, "replay_diff.html", report=report, lines=summary_lines(report))


@router.get("/replays/{replay_id}/transitions.png")
async def replay_png(request: Request, svc: Svc, replay_id: str) -> Response:
    page_account(request, svc, Role.viewer)
    path = _diff_dir(replay_id) / "transitions.png"
    if not replay_id.replace("-", "").isalnum() or not path.is_file():
        return render(request, svc, "error.html", 404, status=404, reason="Open the replay's page first.")
    return FileResponse(path, media_type="image/png")
