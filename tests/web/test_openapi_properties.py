"""Property-based tests generated from the OpenAPI document (schemathesis): whatever is sent, no 5xx but
the documented 503 (this process has no Kafka: promotions cannot be sent), and every answer JSON (the
metrics endpoint: Prometheus text)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from pipeline.settings import WorkerSettings
from pipeline.worker import load_startup
from tests.web.conftest import web_settings
from web.app import build_services, create_app
from web.users import Accounts, Role, add_token


def _app_and_token() -> tuple[object, str]:
    directory = Path(tempfile.mkdtemp(prefix="medroute-schemathesis-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # made at collection, for the whole session
    token = add_token(directory / "tokens", "schemathesis", Role.admin)
    settings = web_settings(directory / "users", directory / "tokens", max_upload=256 * 1024)
    services = build_services(
        settings, load_startup(WorkerSettings()), Accounts.load(directory / "users", directory / "tokens"), None
    )
    return create_app(services), token


APP, TOKEN = _app_and_token()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# The event stream never ends by itself: it is exercised in the browser test.
schema = schema.exclude(path="/api/decisions/stream")


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text[:300])
    content_type = response.headers["content-type"][0]
    assert content_type.startswith(("application/json", "text/plain; version=")), content_type
