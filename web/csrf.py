"""CSRF protection: a token bound to the browser's session (or, before login and with authentication off,
to a random cookie of its own), required on every form post and on every cookie-authenticated API call
that changes something.

The token is an HMAC of that anchor with a key of the process, so nothing is stored; forms carry it in
a hidden ``csrf_token`` field, scripts on the pages in the ``X-CSRF-Token`` header. Requests with an API
token (``Authorization: Bearer``) carry no cookie a foreign page could borrow and need none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from web.auth import SESSION_COOKIE

ANCHOR_COOKIE = "medroute_csrf_anchor"
HEADER = "x-csrf-token"
FIELD = "csrf_token"


class Csrf:
    def __init__(self, secure_cookies: bool) -> None:
        self._key = secrets.token_bytes(32)
        self.secure_cookies = secure_cookies

    def _token(self, anchor: str) -> str:
        return hmac.new(self._key, anchor.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _anchor(request: Request) -> str | None:
        return request.cookies.get(SESSION_COOKIE) or request.cookies.get(ANCHOR_COOKIE)

    def token_for(self, request: Request) -> tuple[str, str | None]:
        """The token for the page being rendered, and a new anchor to set as a cookie when there was none."""
        anchor = self._anchor(request)
        if anchor is not None:
            return self._token(anchor), None
        anchor = secrets.token_urlsafe(24)
        return self._token(anchor), anchor

    def set_anchor(self, response: Response, anchor: str) -> None:
        response.set_cookie(
            ANCHOR_COOKIE, anchor, httponly=True, samesite="strict", secure=self.secure_cookies, path="/"
        )

    def valid(self, request: Request, sent: str | None) -> bool:
        anchor = self._anchor(request)
        return bool(anchor and sent) and hmac.compare_digest(self._token(anchor), sent or "")
