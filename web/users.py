"""Accounts: the users file (argon2 password hashes), API tokens, the admin from the environment.

Users file, one account a line (``medroute web user add NAME --role ROLE`` writes it)::

    alice:reviewer:$argon2id$v=19$m=65536,t=3,p=4$...

Tokens file, one script token a line (``medroute web token add NAME --role ROLE`` prints the token
once and keeps only its SHA-256; a token is 256 random bits, so a fast hash is enough)::

    nightly-export:viewer:<sha256 hex>

Roles, each including the one before: ``viewer`` (classify, live view, decisions, models),
``reviewer`` (the review queue: see items, accept or correct labels), ``admin`` (audit log, promote).
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "mr_"
_HASHER = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


class Role(enum.IntEnum):
    viewer = 1
    reviewer = 2
    admin = 3


class AccountsError(Exception):
    """An unusable users or tokens file, name or role; the message says which line."""


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    via: str = "session"  # "session" | "token" | "anonymous" (authentication off)

    def may(self, role: Role) -> bool:
        return self.role >= role


def role_of(text: str) -> Role:
    try:
        return Role[text.strip().lower()]
    except KeyError:
        raise AccountsError(f"unknown role {text!r} (one of {', '.join(r.name for r in Role)})") from None


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise AccountsError(f"invalid account name {name!r}: letters, digits and . _ @ - (at most 64)")
    return name


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise AccountsError("a password needs at least 8 characters")
    return _HASHER.hash(password)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            parts = line.strip().split(":", 2)
            if len(parts) != 3:
                raise AccountsError(f"{path}:{number}: expected NAME:ROLE:HASH")
            rows.append((number, parts))
    return rows


def _entries(path: Path) -> dict[str, tuple[Role, str]]:
    entries: dict[str, tuple[Role, str]] = {}
    for number, (name, role, secret) in _read_lines(path):
        try:
            entries[check_name(name)] = (role_of(role), secret)
        except AccountsError as exc:
            raise AccountsError(f"{path}:{number}: {exc}") from None
    return entries


def _write_entry(path: Path, name: str, role: Role, secret: str) -> None:
    """Add or replace ``name``'s line; the file is written whole and readable by its owner only."""
    lines = [f"{n}:{r.name}:{s}" for n, (r, s) in _entries(path).items() if n != name]
    lines.append(f"{name}:{role.name}:{secret}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(temporary, path)


def add_user(path: Path, name: str, role: Role, password: str) -> None:
    _write_entry(path, check_name(name), role, hash_password(password))


def add_token(path: Path, name: str, role: Role) -> str:
    """A new token for ``name`` (replacing its old one); only its digest is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    _write_entry(path, check_name(name), role, token_digest(token))
    return token


class Accounts:
    """Who may log in: the users file, plus the admin named by ``USERNAME``/``PASSWORD``; and the tokens."""

    def __init__(
        self, users: Mapping[str, tuple[Role, str]], tokens: Mapping[str, tuple[Role, str]] | None = None
    ) -> None:
        self._users = dict(users)
        self._tokens = {digest: Account(name, role, via="token") for name, (role, digest) in (tokens or {}).items()}

    @classmethod
    def load(
        cls, users_file: Path, tokens_file: Path, admin_name: str | None = None, admin_password: str | None = None
    ) -> Accounts:
        users = _entries(users_file)
        if admin_name and admin_password:
            users[check_name(admin_name)] = (Role.admin, _HASHER.hash(admin_password))
        return cls(users, _entries(tokens_file))

    def __len__(self) -> int:
        return len(self._users) + len(self._tokens)

    def verify_password(self, name: str, password: str) -> Account | None:
        role, stored = self._users.get(name, (None, _DUMMY_HASH))
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return Account(name, role) if role is not None else None

    def verify_token(self, token: str) -> Account | None:
        return self._tokens.get(token_digest(token)) if token.startswith(TOKEN_PREFIX) else None
