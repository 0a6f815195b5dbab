"""``medroute blobs rekey`` on a directory store, and the syslog form of ``medroute audit export``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from medroute.blobstore import BlobStore
from medroute.records import AuditEvent
from tools.operations import blobs
from tools.operations.audit_export import json_line, syslog_line

# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA [SP MSG]
RFC5424 = re.compile(r'^<85>1 \S+ \S+ medroute - \S{1,32} \[medroute@32473( [a-z_]+="(?:[^"\\\]]|\\.)*")+\] \{.*\}$')


def test_blobs_rekey_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    references = [BlobStore(tmp_path, old_key).put(f"blob {n}".encode()) for n in range(4)]
    monkeypatch.setenv("MEDROUTE_BLOB_DIR", str(tmp_path))
    monkeypatch.setenv("MEDROUTE_BLOB_KEY", new_key.hex())
    monkeypatch.setenv("MEDROUTE_BLOB_OLD_KEYS", old_key.hex())
    monkeypatch.delenv("MEDROUTE_BLOB_URL", raising=False)
    assert blobs.main(["rekey"]) == 0
    assert "re-sealed 4, already under the current key 0, failed 0" in capsys.readouterr().out
    assert blobs.main(["rekey"]) == 0  # resumable: a second run finds nothing to do
    assert "re-sealed 0, already under the current key 4" in capsys.readouterr().out
    assert [BlobStore(tmp_path, new_key).get(r) for r in references] == [f"blob {n}".encode() for n in range(4)]
    monkeypatch.setenv("MEDROUTE_BLOB_KEY", os.urandom(32).hex())  # a key that opens none of them
    monkeypatch.delenv("MEDROUTE_BLOB_OLD_KEYS")
    assert blobs.main(["rekey"]) == 1


def test_syslog_lines_are_rfc5424_with_escaped_structured_data() -> None:
    event = AuditEvent(action="route", actor='wor"ker]\\', message_id="abc", details={"label": "x", "n": 1})
    line = syslog_line(event, "host")
    assert RFC5424.match(line), line
    assert 'actor="wor\\"ker\\]\\\\"' in line and line.endswith('{"label": "x", "n": 1}')
    assert json_line(event).startswith("{") and '"action": "route"' in json_line(event)
