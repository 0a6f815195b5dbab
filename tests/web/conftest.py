"""Web tests: the app in this process (FastAPI's TestClient, no Kafka) and, for the browser and the
README's snippet, ``medroute web`` as a real process on the session's Kafka broker."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.settings import WorkerSettings
from pipeline.worker import Startup, load_startup
from web.app import build_services, create_app
from web.settings import WebSettings
from web.users import Accounts, Role, add_token, add_user

PASSWORDS = {"ada": "admin-pass-1", "rita": "reviewer-pass-1", "vic": "viewer-pass-1"}
ROLES = {"ada": Role.admin, "rita": Role.reviewer, "vic": Role.viewer}


@pytest.fixture(scope="session")
def startup() -> Startup:
    return load_startup(WorkerSettings())


@pytest.fixture(scope="session")
def accounts_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A users file with one account per role, and a tokens file with one token per role."""
    directory = tmp_path_factory.mktemp("web-accounts")
    users, tokens = directory / "users", directory / "tokens"
    for name, password in PASSWORDS.items():
        add_user(users, name, ROLES[name], password)
    issued = {role.name: add_token(tokens, f"script-{role.name}", role) for role in Role}
    return users, tokens, issued


def web_settings(users: Path, tokens: Path, **changes: object) -> WebSettings:
    base = WebSettings(
        auth=True,
        users_file=users,
        tokens_file=tokens,
        admin_username=None,
        admin_password=None,
        kafka=False,
        max_upload=2 * 1024 * 1024,
    )
    return replace(base, **changes)


def make_client(startup: Startup, users: Path, tokens: Path, **changes: object) -> TestClient:
    settings = web_settings(users, tokens, **changes)
    accounts = Accounts.load(users, tokens)
    return TestClient(create_app(build_services(settings, startup, accounts, None)), base_url="http://testserver")


@pytest.fixture
def client(startup: Startup, accounts_dir: tuple[Path, Path, dict[str, str]]) -> Iterator[TestClient]:
    users, tokens, _ = accounts_dir
    with make_client(startup, users, tokens) as test_client:
        yield test_client


@pytest.fixture
def tokens(accounts_dir: tuple[Path, Path, dict[str, str]]) -> dict[str, str]:
    return accounts_dir[2]


def png_bytes(side: int = 96) -> bytes:
    gradient = np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
    out = io.BytesIO()
    Image.fromarray(gradient).save(out, format="PNG")
    return out.getvalue()


def csrf_of(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def log_in(client: TestClient, name: str) -> str:
    """Log ``name`` in through the form; returns the CSRF token of the page after login."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": name, "password": PASSWORDS[name], "csrf_token": csrf_of(page.text), "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)
