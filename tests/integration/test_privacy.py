"""Privacy proofs on the whole system (``offline_system.py``): run in a network namespace with loopback only
(``unshare -n``, where the kernel allows it), it works, attempts no connection to any other address and
resolves no name through DNS; and no marker name or identifier sent in HL7 messages, a refused message, a
DICOM image or an API call appears in any log line, metric, decision, audit event or dead letter's metadata."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medroute.config import REPO_ROOT

CONNECT = re.compile(r"connect\(\d+, \{sa_family=(AF_INET6?|AF_UNIX)(.*?)\}")
LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "(::1|::ffff:127\.)')


def _namespace_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("offline")
    command = [sys.executable, "-m", "tests.integration.offline_system", str(out)]
    if _namespace_works():
        command = ["unshare", "-n", *command]
    subprocess.run(command, cwd=REPO_ROOT, check=True, timeout=420, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    return out, json.loads((out / "summary.json").read_text())


def test_the_system_works_offline(run: tuple[Path, dict]) -> None:
    _, summary = run
    assert summary["decisions"] >= 3  # two HL7 messages and one image decided
    assert summary["dicom_status"] == 0 and summary["classify_status"] == 200


def test_no_connection_but_loopback_and_no_dns(run: tuple[Path, dict]) -> None:
    out, summary = run
    if not _namespace_works():
        pytest.skip("unshare -n is not permitted here: the run was not isolated")
    if not shutil.which("strace"):
        pytest.skip("strace is not installed: connections cannot be observed")
    assert summary["namespace"]
    attempts = [m for f in (out / "strace").glob("*.txt") for m in CONNECT.finditer(f.read_text())]
    assert attempts, "no connection observed at all: the trace did not work"
    foreign = [
        f"{family}{rest}"
        for family, rest in (m.groups() for m in attempts)
        if family != "AF_UNIX" and not LOOPBACK.search(rest)
    ]
    assert foreign == []
    assert summary["dns_queries"] == []  # e.g. ONNX Runtime's telemetry (mobile.events.data.microsoft.com)


def test_no_marker_in_logs_metrics_decisions_audit_or_dead_letters(run: tuple[Path, dict]) -> None:
    out, summary = run
    searched = [*(out / "logs").glob("*.log"), *(out / "metrics").glob("*.txt"), out / "topics.json"]
    assert len(searched) >= 9
    topics = json.loads((out / "topics.json").read_text())
    assert topics["hl7.deadletter"] and topics["audit.events"]  # the refused message is there, without raw
    for path in searched:
        text = path.read_text(errors="replace").upper()
        found = [marker for marker in summary["markers"] if marker in text]
        assert found == [], f"{path.name}: {found}"
