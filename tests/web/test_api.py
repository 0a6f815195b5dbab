"""The REST API in this process (no Kafka): answers, the bad inputs, credentials, roles, CSRF."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from pipeline.worker import Startup
from tests.web.conftest import csrf_of, log_in, make_client, png_bytes

HL7_REPORT = (
    b"MSH|^~\\&|RIS|GENERAL|EHR|GENERAL|20240101120000||ORU^R01^ORU_R01|C1|P|2.5\r"
    b"PID|1||MRN123^^^GENERAL^MR||DOE^JANE\r"
    b"OBX|1|TX|18748-4^Diagnostic imaging study^LN||CHEST X-RAY PA AND LATERAL. FINDINGS: The lungs are clear. "
    b"No pleural effusion. IMPRESSION: No acute cardiopulmonary process.\r"
)
ZH_REPORT = "患者男，65岁，反复咳嗽、咳痰10年，加重伴气促3天。查体：双肺可闻及湿啰音。"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_readme_snippet_form(client: TestClient, tokens: dict[str, str]) -> None:
    """multipart ``file`` + ``task_type`` as in the issue's snippet (with a token: auth is on here)."""
    files = {"file": ("medical_report.txt", b"DISCHARGE SUMMARY\nThe patient was discharged home in stable condition.")}
    answer = client.post(
        "/api/classify", files=files, data={"task_type": "text_classification"}, headers=bearer(tokens["viewer"])
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "text" and body["model"] == "doctype-en@1.0.0"
    assert body["label"] in {s["label"] for s in body["labels"]} and len(body["labels"]) == 7
    assert body["decision"]["destinations"] and body["decision"]["rule"]
    assert body["latency_ms"] > 0


def test_chinese_text_goes_to_the_chinese_model(client: TestClient, tokens: dict[str, str]) -> None:
    answer = client.post("/api/classify", json={"text": ZH_REPORT}, headers=bearer(tokens["viewer"]))
    assert answer.status_code == 200
    assert answer.json()["model"].startswith("triage-zh@") and answer.json()["language"] == "zh"
    gb = client.post(
        "/api/classify", files={"file": ("r.txt", ZH_REPORT.encode("gb18030"))}, headers=bearer(tokens["viewer"])
    )
    assert gb.json()["label"] == answer.json()["label"]


def test_hl7_is_decided_by_the_worker_feed(client: TestClient, tokens: dict[str, str]) -> None:
    answer = client.post(
        "/api/classify", files={"file": ("m.hl7", HL7_REPORT)}, headers=bearer(tokens["viewer"])
    ).json()
    assert answer["kind"] == "hl7" and answer["message_type"] == "ORU^R01^ORU_R01"
    assert answer["decision"]["message_type"] == "ORU^R01^ORU_R01"


def test_threshold_changes_the_decision(client: TestClient, tokens: dict[str, str]) -> None:
    low = client.post(
        "/api/classify", json={"text": ZH_REPORT, "threshold": 0.0}, headers=bearer(tokens["viewer"])
    ).json()
    high = client.post(
        "/api/classify", json={"text": ZH_REPORT, "threshold": 1.0}, headers=bearer(tokens["viewer"])
    ).json()
    assert low["below_threshold"] is False and high["below_threshold"] is True
    assert "review-queue" in high["decision"]["destinations"]
    assert low["decision"]["rule"] != high["decision"]["rule"]


def test_a_chest_radiograph_goes_to_the_image_model(
    startup: Startup, accounts_dir: tuple[Path, Path, dict[str, str]], tokens: dict[str, str]
) -> None:
    """RG1_UNCR.dcm is a CR chest film of 7.2 MB (``medroute up`` sends it): the worker's DICOM feed classifies it."""
    chest = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()
    users, token_file, _ = accounts_dir
    client = make_client(startup, users, token_file, max_upload=16 * 1024 * 1024)
    answer = client.post("/api/classify", files={"file": ("cxr.dcm", chest)}, headers=bearer(tokens["viewer"])).json()
    assert answer["kind"] == "dicom" and answer["model"].startswith("cxr-pneumonia@"), answer
    assert answer["decision"]["message_type"] == "DICOM^CR" and "pacs" in answer["decision"]["destinations"]
    truncated = client.post(
        "/api/classify", files={"file": ("cut.dcm", chest[: len(chest) // 2])}, headers=bearer(tokens["viewer"])
    )
    assert truncated.status_code == 422 and "ends inside an element" in truncated.json()["detail"]


def test_dicom_and_png(client: TestClient, tokens: dict[str, str]) -> None:
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    answer = client.post("/api/classify", files={"file": ("ct.dcm", ct)}, headers=bearer(tokens["viewer"])).json()
    assert answer["kind"] == "dicom" and answer["model"] is None and answer["decision"]["message_type"] == "DICOM^CT"
    picture = client.post(
        "/api/classify",
        files={"file": ("cxr.png", png_bytes())},
        data={"task_type": "image_classification"},
        headers=bearer(tokens["viewer"]),
    ).json()
    assert picture["model"].startswith("cxr-pneumonia@") and {s["label"] for s in picture["labels"]} == {
        "normal",
        "pneumonia",
    }


@pytest.mark.parametrize(
    ("name", "data", "task", "status", "words"),
    [
        ("empty.txt", b"", "auto", 422, "empty"),
        ("blank.txt", b"   \n ", "auto", 422, "empty"),
        ("x.bin", bytes(range(256)) * 8, "auto", 415, "binary"),
        ("bad.pdf", b"%PDF-1.4\n1 0 obj garbage", "auto", 422, "pdf"),
        ("bad.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage", "auto", 422, "dicom"),
        ("bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "auto", 422, "image"),
        ("report.txt", b"A discharge summary.", "image_classification", 422, "task"),
        ("ct.dcm", None, "text_classification", 422, "text_classification"),
        ("bad.hl7", b"MSH|^~\\&|A\rPID|", "auto", 422, "hl7"),
        ("r.txt", b"some text", "tea_classification", 422, "task"),
    ],
)
def test_bad_inputs_get_a_4xx_with_a_reason(
    client: TestClient, tokens: dict[str, str], name: str, data: bytes | None, task: str, status: int, words: str
) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes() if data is None else data
    answer = client.post(
        "/api/classify", files={"file": (name, data)}, data={"task_type": task}, headers=bearer(tokens["viewer"])
    )
    assert answer.status_code == status, answer.text
    assert words.lower() in answer.json()["detail"].lower()


def test_oversize_upload_and_wrong_content_type(client: TestClient, tokens: dict[str, str]) -> None:
    big = client.post(
        "/api/classify", files={"file": ("big.txt", b"a" * (3 * 1024 * 1024))}, headers=bearer(tokens["viewer"])
    )
    assert big.status_code == 413 and "MEDROUTE_HTTP_MAX_UPLOAD" in big.json()["detail"]
    plain = client.post(
        "/api/classify", content=b"text", headers={**bearer(tokens["viewer"]), "content-type": "text/plain"}
    )
    assert plain.status_code == 415
    broken = client.post(
        "/api/classify", content=b"{not json", headers={**bearer(tokens["viewer"]), "content-type": "application/json"}
    )
    assert broken.status_code == 422 and "JSON" in broken.json()["detail"]


def test_credentials(client: TestClient, tokens: dict[str, str]) -> None:
    missing = client.post("/api/classify", json={"text": "x"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "authentication" in missing.json()["detail"]
    assert client.post("/api/classify", json={"text": "x"}, headers=bearer("mr_wrong")).status_code == 401
    assert client.get("/api/models", headers=bearer(tokens["viewer"])).status_code == 200
    page = client.get("/review", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=/review")


def test_roles(client: TestClient, tokens: dict[str, str]) -> None:
    viewer, reviewer, admin = (bearer(tokens[r]) for r in ("viewer", "reviewer", "admin"))
    assert client.get("/api/audit", headers=viewer).status_code == 403
    assert client.get("/api/audit", headers=reviewer).status_code == 403
    assert client.get("/api/audit", headers=admin).status_code == 200
    assert client.get("/api/review", headers=viewer).status_code == 403
    assert client.get("/api/review", headers=reviewer).status_code == 200
    refused = client.post("/api/models/promote", json={"model": "doctype-en@1.0.0"}, headers=viewer)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]


def test_login_session_csrf_and_logout(client: TestClient) -> None:
    token = log_in(client, "vic")
    assert "vic (viewer)" in client.get("/").text
    # A cookie-authenticated call must carry the page's CSRF token.
    assert client.post("/api/classify", json={"text": "A progress note."}).status_code == 403
    ok = client.post("/api/classify", json={"text": "A progress note."}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200
    refused = client.post("/models/promote", data={"model": "doctype-en@1.0.0", "csrf_token": token})
    assert refused.status_code == 403 and "admin" in refused.text
    assert client.post("/logout", data={}).status_code == 403  # a form without its token
    client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_without_csrf_and_failures_are_rate_limited(
    startup: Startup, accounts_dir: tuple[Path, Path, dict[str, str]]
) -> None:
    users, tokens, _ = accounts_dir
    with make_client(startup, users, tokens, login_attempts=3) as client:
        assert client.post("/login", data={"username": "vic", "password": "x"}).status_code == 403
        token = csrf_of(client.get("/login").text)
        statuses = [
            client.post("/login", data={"username": "vic", "password": "wrong", "csrf_token": token}).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        right = client.post("/login", data={"username": "vic", "password": "viewer-pass-1", "csrf_token": token})
        assert right.status_code == 429 and "Retry-After" in right.headers


def test_auth_off_says_so(startup: Startup, accounts_dir: tuple[Path, Path, dict[str, str]]) -> None:
    users, tokens, _ = accounts_dir
    with make_client(startup, users, tokens, auth=False) as client:
        assert 'id="auth-off"' in client.get("/").text
        assert client.post("/api/classify", json={"text": "A progress note."}).status_code == 200


def test_health_ready_metrics_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["kafka"] is None and "doctype-en@1.0.0" in ready["models"]
    assert "medroute_web_classify_total" in client.get("/metrics").text
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from the internet


def test_destinations_api_and_page(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/api/destinations").status_code == 401
    assert client.get("/api/destinations", headers=bearer(tokens["viewer"])).json() == []
    live = client.app.state.services.live  # type: ignore[attr-defined]
    now = time.time()
    live.destinations["pacs"] = {"type": "dicom", "stopped": False, "breaker": "open", "delivered": 5,
                                 "dead_lettered": 1, "retrying": 2, "last_error": "connection_refused", "at": now}
    live.destinations["ehr"] = {"type": "mllp", "stopped": True, "breaker": "closed", "delivered": 50,
                                "dead_lettered": 0, "retrying": 0, "last_error": None, "at": now - 100}  # fmt: skip
    rows = client.get("/api/destinations", headers=bearer(tokens["viewer"])).json()
    assert [(r["destination"], r["state"], r["breaker"], r["pending"]) for r in rows] == [
        ("ehr", "stopped", "closed", None),  # no Kafka in this process: pending unknown
        ("pacs", "running", "open", None),
    ]
    page = client.get("/destinations", headers=bearer(tokens["viewer"])).text
    assert 'data-destination="pacs"' in page and "connection_refused" in page
    assert '<td class="breaker error">open</td>' in page
    # Dead letters are read from Kafka, which this process has not: a clear 503, and only admins send them again.
    answer = client.get("/api/destinations/pacs/deadletters", headers=bearer(tokens["viewer"]))
    assert answer.status_code == 503 and "without Kafka" in answer.json()["detail"]
    assert client.post("/api/destinations/pacs/redrive", json={}, headers=bearer(tokens["reviewer"])).status_code == 403
    refused = client.post("/api/destinations/pacs/redrive", json={"reason": "lost"}, headers=bearer(tokens["admin"]))
    assert refused.status_code == 422
    assert client.post("/api/destinations/pacs/redrive", json={}, headers=bearer(tokens["admin"])).status_code == 503
