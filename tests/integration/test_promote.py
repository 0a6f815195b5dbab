"""``medroute promote`` switches a running worker's model without a restart, and a restarted worker
starts with the promoted version. On a broker of its own: the control topic keeps promotions forever.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from medroute.config import AUDIT_EVENTS, REPO_ROOT, ROUTING_DECISIONS, KafkaSettings
from models.bundle import load_manifest, write_manifest
from models.registry import INSTALLED_DIR
from shell.broker import LocalBroker
from tests.integration.processes import ChildProcess
from tests.integration.test_worker import produce
from tests.integration.topic_reading import read_topic_sync
from tests.unit.test_pipeline_support import fixture_record


def second_version(models_dir: Path) -> str:
    """doctype-en as version 1.1.0 in ``models_dir`` (same graph: what matters is the version it reports)."""
    target = models_dir / "doctype-en-1.1.0"
    shutil.copytree(INSTALLED_DIR / "doctype-en", target)
    write_manifest(target, {**load_manifest(target), "version": "1.1.0"})
    return "doctype-en@1.1.0"


def promote(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shell.cli", "promote", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def send_reports(kafka: KafkaSettings, count: int) -> set[str]:
    run = uuid.uuid4().hex[:8]
    records = [fixture_record("oru_r01_radiology.hl7", message_id=f"{run}-{n}") for n in range(count)]
    produce(kafka, [(b"MRN200871", record.to_json()) for record in records])
    return {record.message_id for record in records}


def models_of(kafka: KafkaSettings, ids: set[str]) -> set[str]:
    def complete(found: list[dict]) -> bool:
        return sum(d["message_id"] in ids for d in found) >= len(ids)

    decisions = read_topic_sync(kafka, ROUTING_DECISIONS, until=complete, timeout=120)
    found = [d for d in decisions if d["message_id"] in ids]
    assert len(found) == len(ids)
    return {d["model"] for d in found}


def test_promotion_switches_a_running_worker_and_outlives_its_restart(own_broker: LocalBroker, tmp_path: Path):
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    models_dir = tmp_path / "models"
    promoted = second_version(models_dir)
    env = {
        "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "MEDROUTE_HOME": str(tmp_path),
        "MEDROUTE_MODELS_DIR": str(models_dir),
        "MEDROUTE_TEXT_MODEL": "doctype-en@1.0.0",
        "MEDROUTE_IMAGE_MODEL": "none",
        "MEDROUTE_BATCH_MS": "50",
    }
    worker = ChildProcess("pipeline", env, log_path=tmp_path / "worker.log").start()
    try:
        assert models_of(kafka, send_reports(kafka, 3)) == {"doctype-en@1.0.0"}, worker.log()[-3000:]

        refused = promote({**env, "PYTHONPATH": str(REPO_ROOT)}, "doctype-en@9.9.9")
        assert refused.returncode == 2 and "no model bundle 'doctype-en@9.9.9'" in refused.stderr

        done = promote({**env, "PYTHONPATH": str(REPO_ROOT)}, promoted, "--by", "dr-tester")
        assert done.returncode == 0, done.stderr

        def applied(events: list[dict]) -> bool:
            return any(e["action"] == "promote" and e["actor"] == "worker" for e in events)

        audit = [e for e in read_topic_sync(kafka, AUDIT_EVENTS, until=applied, timeout=60) if e["action"] == "promote"]
        by_actor = {e["actor"]: e["details"] for e in audit}
        assert by_actor["tools.promote"]["model"] == promoted and by_actor["tools.promote"]["by"] == "dr-tester"
        assert by_actor["worker"] == {**by_actor["worker"], "applied": True, "previous": "doctype-en@1.0.0"}
        assert by_actor["worker"]["model"] == promoted

        assert models_of(kafka, send_reports(kafka, 3)) == {promoted}, worker.log()[-3000:]
    finally:
        assert worker.stop(timeout=30) == 0, worker.log()[-3000:]

    # Started again with the same environment (which still says 1.0.0): the promotion wins.
    restarted = ChildProcess("pipeline", env, log_path=tmp_path / "worker-2.log").start()
    try:
        assert models_of(kafka, send_reports(kafka, 2)) == {promoted}, restarted.log()[-3000:]
    finally:
        restarted.stop(timeout=30)
    started = [json.loads(line) for line in restarted.log().splitlines() if line.startswith("{")]
    assert any(entry.get("event") == "promoted_models_at_start" for entry in started)
