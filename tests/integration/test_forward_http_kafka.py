"""The http, kafka and folder destinations against receivers this project did not write: Python's own
``http.server`` (a 503 first, then 200), a topic on the real broker, a directory."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from medroute.config import KafkaSettings
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port
from tests.integration.forward_peers import hl7_decision, hl7_message, publish_sync, start_forwarder, wait_until
from tests.integration.topic_reading import read_topic_sync

DESTINATIONS = """destinations:
  intake-{tag}: {{type: http, url: "http://127.0.0.1:{port}/fhir/Binary", body: raw, headers: {{X-Site: north}},
                 backoff: {{initial: 0.2, maximum: 0.5}}}}
  analytics-{tag}: {{type: kafka, topic: analytics-{tag}, body: decision}}
  review-{tag}: {{type: folder, path: "{folder}", pattern: "{{kind}}/{{message_id}}.{{ext}}"}}
"""


class Intake(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []
    refuse_first: ClassVar[bool] = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if Intake.refuse_first:  # a receiver that is busy once: the forwarder must retry, not give up
            Intake.refuse_first = False
            self.send_response(503)
            self.end_headers()
            return
        Intake.received.append((self.path, dict(self.headers), body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_http_kafka_and_folder_destinations_receive_every_item_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Intake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    asyncio.run(ensure_topics(kafka, (f"analytics-{tag}",)))
    folder = tmp_path / "review"
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(DESTINATIONS.format(tag=tag, port=server.server_port, folder=folder))
    forwarder = start_forwarder(kafka, tmp_path, destinations)
    try:
        sent = [hl7_message(n, f"P{n % 2:03d}") for n in range(6)]
        decided = [hl7_decision(raw, [f"intake-{tag}", f"analytics-{tag}", f"review-{tag}"]) for raw in sent]
        publish_sync(kafka, decided)
        ids = {item.message_id for item in decided}

        assert wait_until(lambda: len(Intake.received) >= 6, 60), forwarder.log()[-3000:]
        assert sorted(body for _, _, body in Intake.received) == sorted(sent)  # the raw message, once each
        path, headers, _ = Intake.received[0]
        assert path == "/fhir/Binary" and headers["X-Site"] == "north"
        assert headers["Content-Type"] == "x-application/hl7-v2+er7"

        on_topic = read_topic_sync(kafka, f"analytics-{tag}", until=lambda records: len(records) >= 6)
        assert {record["message_id"] for record in on_topic} == ids  # the decision as JSON
        assert all("DOE" not in json.dumps(record) for record in on_topic)  # decisions carry no PHI

        assert wait_until(lambda: len(list((folder / "hl7").glob("*.hl7"))) >= 6, 30)
        files = {path.stem: path.read_bytes() for path in (folder / "hl7").glob("*.hl7")}
        assert set(files) == ids and sorted(files.values()) == sorted(sent)
    finally:
        forwarder.stop()
        server.shutdown()
