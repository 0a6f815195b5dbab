"""A fine-tuned encoder bundle in the real slice: tiny fine-tune (seconds) -> export -> parity -> int8 ->
the worker loads it -> HL7 over MLLP -> a decision that names that model, on a broker of the test's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from formats.hl7.mllp_client import MllpClient
from medroute.config import HL7_INBOUND, ROUTING_DECISIONS, KafkaSettings
from models.bundle import load_manifest
from shell.broker import LocalBroker
from shell.samples import sample_messages
from tests.integration.conftest import start_listener
from tests.integration.mllp_peers import parse_ack
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync
from tests.tiny_encoder import write_tiny_csv, write_tiny_encoder

pytest.importorskip("torch")
pytest.importorskip("transformers")

MESSAGES = 12
ROUTES = """rules:
  - name: tiny-radiology
    label: radiology
    destinations: [ris]
  - name: everything-else
    destinations: [ehr-documents]
"""


async def _send(raw: list[bytes], port: int) -> list[tuple[str, str]]:
    client = MllpClient("127.0.0.1", port)
    await client.connect()
    try:
        return [parse_ack(await client.send(message, timeout=30)) for message in raw]
    finally:
        await client.close()


def test_a_fine_tuned_encoder_classifies_mllp_traffic(own_broker: LocalBroker, tmp_path: Path) -> None:
    from tools.modelling import finetune

    base = write_tiny_encoder(tmp_path / "base")
    train = write_tiny_csv(tmp_path / "train.csv", 45, seed=3)
    dev = write_tiny_csv(tmp_path / "dev.csv", 15, seed=4)
    bundle = tmp_path / "models" / "tiny-doctype"
    args = ["--model-type", "text", "--base-model", str(base), "--train-data", str(train), "--eval-data", str(dev)]
    assert finetune.main([*args, "--num-epochs", "1", "--max-length", "32", "--output-dir", str(bundle)]) == 0
    manifest = load_manifest(bundle)
    assert manifest["metrics"]["dev"]["parity_max_abs_difference"] < 1e-4
    ref = f"{manifest['name']}@{manifest['version']}"

    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    env = {
        "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "MEDROUTE_HOME": str(tmp_path),
        "MEDROUTE_TEXT_MODEL": str(bundle),
        "MEDROUTE_IMAGE_MODEL": "none",
        "MEDROUTE_BATCH_MS": "50",
        "MEDROUTE_ROUTES": str(tmp_path / "routes.yaml"),  # the tiny model's labels, not doctype-en's
    }
    (tmp_path / "routes.yaml").write_text(ROUTES, encoding="utf-8")
    worker = ChildProcess("pipeline", env, log_path=tmp_path / "worker.log").start()
    listener = start_listener(kafka.bootstrap_servers, str(tmp_path))
    try:
        messages = [m for m in sample_messages(4 * MESSAGES, seed=1515, prefix="ENC") if m.has_text][:MESSAGES]
        acks = asyncio.run(_send([m.raw for m in messages], listener.port))
        assert [code for code, _ in acks] == ["AA"] * len(messages)
        sent = {m.control_id for m in messages}
        stored = read_topic_sync(
            kafka, HL7_INBOUND, until=lambda rs: sum(r["control_id"] in sent for r in rs) >= len(sent)
        )
        ids = {r["message_id"] for r in stored if r["control_id"] in sent}
        decisions = read_topic_sync(
            kafka, ROUTING_DECISIONS, until=lambda ds: sum(d["message_id"] in ids for d in ds) >= len(ids), timeout=120
        )
        mine = [d for d in decisions if d["message_id"] in ids]
        assert len(mine) == len(sent), worker.log()[-3000:]
        assert {d["model"] for d in mine} == {ref}
        assert all(d["label"] in manifest["labels"] and 0 < d["confidence"] <= 1 for d in mine)
        assert {d["rule"] for d in mine} <= {"tiny-radiology", "everything-else"}
    finally:
        listener.process.stop()
        worker.stop()
