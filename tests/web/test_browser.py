"""The pages in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``, driven by Selenium),
against ``medroute web`` as its own process on the session's Kafka broker.

What the worker would publish is published with the worker's own code (:class:`pipeline.hl7_feed.Hl7Feed`
and :func:`pipeline.publish.messages_for`) after the inbound record is stored as the listener stores it,
so the test needs no listener or worker process. ``MEDROUTE_SCREENSHOTS=DIR`` keeps the screenshots
(``docs/screenshots`` holds the committed ones).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.data import get_testdata_file

from formats.hl7.record import record_of_bytes
from medroute.config import FEEDBACK, HL7_INBOUND, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.ports import free_port
from medroute.records import new_id, utc_now
from pipeline.forward import status
from pipeline.forward.forwarder import ForwardStats
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided
from pipeline.publish import messages_for
from pipeline.worker import Startup
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic
from tests.web.conftest import PASSWORDS
from tools.modelling.feedback import rows_of
from tools.operations.replay import main as replay_main
from web.users import Role, add_user

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ZH_REPORT = "患者男，65岁，反复咳嗽、咳痰10年，加重伴气促3天。查体：双肺可闻及湿啰音。"
REPORT = (
    "MSH|^~\\&|RIS|GENERAL|EHR|GENERAL|{now}||ORU^R01^ORU_R01|{control}|P|2.5\r"
    "PID|1||MRN{control}^^^GENERAL^MR||DOE^JANE\r"
    "OBX|1|TX|18748-4^Diagnostic imaging study^LN||CHEST X-RAY PA AND LATERAL. FINDINGS: The lungs are clear. "
    "No pleural effusion. IMPRESSION: No acute cardiopulmonary process.\r"
)


@dataclass
class Server:
    url: str
    process: ChildProcess
    kafka: KafkaSettings


def _ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if json.load(answer)["ready"]:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready")


@pytest.fixture(scope="module")
def server(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("web-server")
    users = home / "users"
    add_user(users, "rita", Role.reviewer, PASSWORDS["rita"])
    add_user(users, "vic", Role.viewer, PASSWORDS["vic"])
    port = free_port()
    child = ChildProcess(
        "web",
        {
            "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "MEDROUTE_HOME": str(home),
            "MEDROUTE_HTTP_PORT": str(port),
            "MEDROUTE_WEB_USERS_FILE": str(users),
            "MEDROUTE_BLOB_KEY": bytes(range(32)).hex(),
            "USERNAME": "ada",
            "PASSWORD": PASSWORDS["ada"],
        },
        log_path=home / "web.log",
    ).start(port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        _ready(url)
        yield Server(url, child, kafka)
    finally:
        child.stop()


def publish_decided(kafka: KafkaSettings, startup: Startup) -> str:
    """Store a report as the listener would, and its decision and audit events as the worker would."""
    control = new_id()[:10]
    raw = REPORT.format(now=time.strftime("%Y%m%d%H%M%S"), control=control).encode()
    record = record_of_bytes(raw, peer="127.0.0.1:1", received_at=utc_now())
    [outcome] = Hl7Feed(startup.classifier, startup.rules).process([record])
    assert isinstance(outcome, Decided) and "review-queue" in outcome.decision.destinations

    async def send() -> None:
        producer = durable_producer(kafka)
        await producer.start()
        try:
            await producer.send_and_wait(HL7_INBOUND, key=b"MRN" + control.encode(), value=record.to_json())
            for message in messages_for(outcome):
                await producer.send_and_wait(message.topic, key=message.key, value=message.value)
        finally:
            await producer.stop()

    asyncio.run(send())
    return record.message_id


def publish_forwarders_status(kafka: KafkaSettings, forwarders: list[SimpleNamespace]) -> None:
    """Snapshots as running forwarders publish them (:func:`pipeline.forward.status.publish`)."""

    async def send() -> None:
        producer = durable_producer(kafka)
        await producer.start()
        try:
            await status.publish(producer, forwarders)  # type: ignore[arg-type]
        finally:
            await producer.stop()  # sends what is pending

    asyncio.run(send())


def forwarder(name: str, kind: str, breaker: str, **counts: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, destination=SimpleNamespace(type=kind), breaker=SimpleNamespace(state=breaker),
                           stats=ForwardStats(**counts))  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(driver: object, condition: object, timeout: float = 20) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def shot(driver: object, name: str, tmp_path: Path) -> None:
    directory = Path(os.environ.get("MEDROUTE_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(directory / f"{name}.png"))  # type: ignore[attr-defined]


def log_in(driver: object, server: Server, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/login")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "username").send_keys(name)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])  # type: ignore[attr-defined]
    driver.find_element(By.ID, "login").click()  # type: ignore[attr-defined]
    wait_for(driver, lambda d: d.find_element(By.ID, "who").text.startswith(name))


def test_pages_in_a_browser(server: Server, browser: object, startup: Startup, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d: object = browser
    began = datetime.now(UTC).isoformat()
    first = publish_decided(server.kafka, startup)

    # Log in; classify a Chinese text, then a DICOM file.
    log_in(d, server, "ada")
    d.find_element(By.ID, "text").send_keys(ZH_REPORT)  # type: ignore[attr-defined]
    d.find_element(By.ID, "classify").click()  # type: ignore[attr-defined]
    label = wait_for(d, lambda d: d.find_element(By.ID, "result-label").text)
    assert any("\u4e00" <= char <= "\u9fff" for char in label), label  # a Chinese label, shown as text
    assert "triage-zh@" in d.find_element(By.ID, "result-model").text  # type: ignore[attr-defined]
    shot(d, "web-classify", tmp_path)
    d.find_element(By.ID, "text").clear()  # type: ignore[attr-defined]
    d.find_element(By.ID, "file").send_keys(get_testdata_file("CT_small.dcm"))  # type: ignore[attr-defined]
    d.find_element(By.ID, "classify").click()  # type: ignore[attr-defined]
    wait_for(d, lambda d: "pacs" in d.find_element(By.ID, "result-decision").text)
    assert "dicom" in d.find_element(By.ID, "result-model").text  # type: ignore[attr-defined]

    # The live view: a decision published now appears in the table.
    d.get(f"{server.url}/live")  # type: ignore[attr-defined]
    wait_for(d, lambda d: d.find_element(By.ID, "stream-state").text == "connected")
    second = publish_decided(server.kafka, startup)
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#decisions tr[data-id="{second}"]'), timeout=30)
    wait_for(d, lambda d: "review-queue" in d.find_element(By.ID, "by-destination").text)
    shot(d, "web-live", tmp_path)

    # The review queue: open the first item, correct its label; the feedback record is on Kafka.
    d.get(f"{server.url}/review")  # type: ignore[attr-defined]
    shot(d, "web-review", tmp_path)
    d.find_element(By.CSS_SELECTOR, f'a[href="/review/{first}"]').click()  # type: ignore[attr-defined]
    assert "CHEST X-RAY" in wait_for(d, lambda d: d.find_element(By.ID, "item-text").text)
    predicted = d.find_element(By.ID, "predicted").text  # type: ignore[attr-defined]
    shot(d, "web-review-item", tmp_path)
    chooser = Select(d.find_element(By.ID, "correct-label"))  # type: ignore[attr-defined]
    corrected = next(o.get_attribute("value") for o in chooser.options if o.get_attribute("value") != predicted)
    chooser.select_by_value(corrected)
    d.find_element(By.ID, "correct").click()  # type: ignore[attr-defined]
    wait_for(d, lambda d: d.current_url.endswith("/review"))
    assert f'/review/{first}"' not in d.page_source  # type: ignore[attr-defined]
    feedback = asyncio.run(
        read_topic(server.kafka, FEEDBACK, until=lambda rs: any(r["message_id"] == first for r in rs), timeout=30)
    )
    record = next(r for r in feedback if r["message_id"] == first)
    assert (record["label"], record["predicted"], record["by"], record["accepted"]) == (
        corrected,
        predicted,
        "ada",
        False,
    )
    assert "CHEST X-RAY" in record["text"]
    assert (f"feedback-{first}", record["text"], corrected) in rows_of(feedback, "doctype-en")  # finetune --feedback

    # The audit log names the reviewer for the view and the correction, without the report's text.
    d.get(f"{server.url}/audit")  # type: ignore[attr-defined]
    wait_for(d, lambda d: "override" in d.find_element(By.ID, "audit").text)
    audit_text = d.find_element(By.ID, "audit").text  # type: ignore[attr-defined]
    assert "view" in audit_text and "user=ada" in audit_text
    # The report's words never reach the audit log (a DICOM event's body_part=CHEST is metadata, not the report).
    assert "CHEST X-RAY" not in audit_text and "lungs are clear" not in audit_text
    shot(d, "web-audit", tmp_path)
    d.get(f"{server.url}/models")  # type: ignore[attr-defined]
    shot(d, "web-models", tmp_path)

    # Destinations, as their forwarders report them: a receiver whose breaker is open is marked.
    tag = new_id()[:4]
    publish_forwarders_status(server.kafka, [
        forwarder(f"pacs-{tag}", "dicom", "open", delivered=120, retrying=4, last_error="connection_refused",
                  last_delivered_at=time.time() - 90),
        forwarder(f"ehr-{tag}", "mllp", "closed", delivered=5400, last_delivered_at=time.time() - 1),
    ])  # fmt: skip
    d.find_element(By.LINK_TEXT, "Destinations").click()  # type: ignore[attr-defined]
    row = f'tr[data-destination="pacs-{tag}"]'
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} td.breaker.error"), timeout=30)
    assert "connection_refused" in d.find_element(By.CSS_SELECTOR, row).text  # type: ignore[attr-defined]
    assert d.find_element(By.CSS_SELECTOR, f'tr[data-destination="ehr-{tag}"] td.state').text == "running"  # type: ignore[attr-defined]
    shot(d, "web-destinations", tmp_path)
    d.find_element(By.LINK_TEXT, f"pacs-{tag}").click()  # type: ignore[attr-defined]
    assert "No dead letters" in wait_for(d, lambda d: d.find_element(By.ID, "dead-letters-empty").text)

    # A replay of the reports published here, and its diff with the transition matrix picture.
    replay_id = "web" + new_id()[:9]
    argv = ["--from", began, "--model", "doctype-en@1.0.0", "--replay-id", replay_id, "--no-progress"]
    assert replay_main(argv) == 0
    d.get(f"{server.url}/replays")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, f'a[href="/replays/{replay_id}"]').click()  # type: ignore[attr-defined]
    assert "compared" in wait_for(d, lambda d: d.find_element(By.ID, "diff-summary").text, timeout=60)
    picture = d.find_element(By.ID, "transitions")  # type: ignore[attr-defined]
    wait_for(d, lambda d: d.execute_script("return arguments[0].naturalWidth", picture) > 0)
    shot(d, "web-replay-diff", tmp_path)

    # A viewer is refused when promoting.
    d.find_element(By.ID, "logout").click()  # type: ignore[attr-defined]
    log_in(d, server, "vic")
    d.get(f"{server.url}/models")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "button.promote").click()  # type: ignore[attr-defined]
    reason = wait_for(d, lambda d: d.find_element(By.ID, "error-reason").text)
    assert "admin" in reason and "vic is viewer" in reason
    assert not d.find_elements(By.LINK_TEXT, "Review")  # type: ignore[attr-defined]
