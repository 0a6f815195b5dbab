"""The issue's snippet, run as is (a separate Python process, ``requests``) against a running server with
authentication off, gets a JSON answer. On port 7860 when that port is free; otherwise the only change to
the snippet is the port."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from medroute.config import REPO_ROOT
from medroute.ports import free_port, port_open
from tests.integration.processes import ChildProcess

SNIPPET = """\
import requests
files = {'file': open('medical_report.txt', 'rb')}
data = {'task_type': 'text_classification'}
print(requests.post('http://localhost:7860/api/classify', files=files, data=data).json())
"""


def test_snippet_as_is(tmp_path: Path) -> None:
    port = 7860 if not port_open(7860) else free_port()
    server = ChildProcess(
        "web",
        {
            "ENABLE_AUTH": "false",
            "MEDROUTE_WEB_KAFKA": "0",
            "MEDROUTE_HTTP_PORT": str(port),
            "MEDROUTE_HOME": str(tmp_path),
        },
        log_path=tmp_path / "web.log",
    ).start(port=port)
    try:
        (tmp_path / "medical_report.txt").write_text(
            "DISCHARGE SUMMARY\nAdmitted with community-acquired pneumonia, treated with antibiotics, "
            "discharged home in stable condition. Follow up with the primary care physician in one week.\n",
            encoding="utf-8",
        )
        snippet = SNIPPET.replace(":7860/", f":{port}/")
        run = subprocess.run(
            [sys.executable, "-c", snippet],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    answer = ast.literal_eval(run.stdout.strip())
    assert answer["model"] == "doctype-en@1.0.0" and answer["label"] in {s["label"] for s in answer["labels"]}
    assert answer["decision"]["destinations"]
