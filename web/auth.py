"""Who is asking: session cookies (server-side, with expiry), API tokens, login rate limits, roles.

* A browser logs in with a name and password (argon2, :mod:`web.users`) and gets an opaque session
  cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` under TLS) that expires after
  ``MEDROUTE_WEB_SESSION_SECONDS``; logging out ends the session on the server.
* A script sends ``Authorization: Bearer <token>``.
* Login failures are counted per client address and per name; past ``MEDROUTE_WEB_LOGIN_ATTEMPTS`` in
  ``MEDROUTE_WEB_LOGIN_WINDOW`` seconds further attempts get 429 until the window has passed.
* With authentication off (``ENABLE_AUTH=false``) everyone is ``anonymous`` with the admin role, and
  every page says so in a banner.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from starlette.requests import Request

from web.users import Account, Accounts, Role

SESSION_COOKIE = "medroute_session"
ANONYMOUS = Account("anonymous", Role.admin, via="anonymous")


class AuthError(Exception):
    """401 (not logged in) or 403 (logged in, role too low); pages redirect or explain, the API answers JSON."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Session:
    account: Account
    expires: float


class Sessions:
    """Server-side sessions by random token; a restart logs everyone out."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, account: Account) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            self._sessions[token] = Session(account, time.monotonic() + self.lifetime)
        return token

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires <= time.monotonic():
                del self._sessions[token]
                return None
            return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]


class LoginLimiter:
    """Failed logins per key (client address, account name) in a sliding window."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> int:
        """Seconds until another attempt is allowed (0: now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                failures = self._failures.get(key)
                if failures is None:
                    continue
                while failures and failures[0] <= now - self.window:
                    failures.popleft()
                if len(failures) >= self.attempts:
                    wait = max(wait, failures[0] + self.window - now)
        return int(wait) + 1 if wait else 0

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures[key].append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class Authenticator:
    def __init__(self, enabled: bool, accounts: Accounts, sessions: Sessions) -> None:
        self.enabled = enabled
        self.accounts = accounts
        self.sessions = sessions

    def account_of(self, request: Request) -> Account | None:
        """The account a request speaks for, or None (not logged in)."""
        if not self.enabled:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return self.accounts.verify_token(header[7:].strip())
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        return session.account if session is not None else None

    def require(self, request: Request, role: Role) -> Account:
        account = self.account_of(request)
        if account is None:
            raise AuthError(401, "authentication required: log in, or send Authorization: Bearer <token>")
        if not account.may(role):
            raise AuthError(403, f"the {role.name} role is needed; {account.name} is {account.role.name}")
        return account
