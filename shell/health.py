"""``medroute health [ROLE]``: is the process of this container (or host) serving? Exit 0 yes, 1 no.

The container images' HEALTHCHECK runs it without a role: the role is then read from the command line of
process 1 (``medroute listen mllp``, ``medroute worker``, ...), so one image serves every process. Checks,
each against the port the process's own settings name:

* ``mllp``, ``dicom``: the listener accepts a TCP connection (closed at once, before any frame or association);
* ``web``: ``GET /healthz`` answers 200 (HTTPS when a certificate is configured; where client certificates are
  required, ``MEDROUTE_HTTP_TLS_CA``, the server's own certificate is presented, so it must be one that CA signed);
* ``worker``: Faust's web server (``MEDROUTE_WORKER_WEB_PORT``, served by the worker's own event loop) answers 200.
* ``forward``: its main loop touched its heartbeat file (``MEDROUTE_HOME/forward/alive``) in the last 30 s (it
  serves no port; a receiver that is down is the destination's state, ``medroute forward status``, not ill health).

A process without a check (a one-shot verb) is reported healthy with a note.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

TIMEOUT = 3.0


def role_of_process_one(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """``mllp``/``dicom``/``worker``/``web``/... from process 1's arguments after ``medroute``; None if unknown."""
    try:
        args = [arg for arg in cmdline.read_bytes().decode(errors="replace").split("\0") if arg]
    except OSError:
        return None
    for index, arg in enumerate(args):
        if Path(arg).name == "medroute" or arg == "shell.cli":
            rest = args[index + 1 :]
            if rest[:1] == ["listen"] and len(rest) > 1:
                return rest[1]
            return rest[0] if rest else None
    return None


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _tcp(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((_local(host), port), timeout=TIMEOUT):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


def _http(url: str, identity: tuple[str, str | None] | None = None) -> str | None:
    """``GET url`` answers 200; ``identity`` (certificate, key) is presented where the server asks for one."""
    context = ssl._create_unverified_context() if url.startswith("https") else None  # our own port: no name to verify
    if context is not None and identity is not None:
        context.load_cert_chain(*identity)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def problem(role: str) -> str | None:
    """What is wrong with the process of ``role``; None when it serves."""
    if role == "mllp":
        from listeners.mllp.settings import MLLP_HOST, MLLP_PORT

        return _tcp(MLLP_HOST(), MLLP_PORT())
    if role == "dicom":
        from listeners.dicom.settings import DICOM_HOST, DICOM_PORT

        return _tcp(DICOM_HOST(), DICOM_PORT())
    if role == "web":
        from web.settings import HTTP_HOST, HTTP_PORT, HTTP_TLS_CA, HTTP_TLS_CERT, HTTP_TLS_KEY

        cert = HTTP_TLS_CERT()
        # With client certificates required, the server's own certificate is the check's (signed by the site's CA).
        identity = (cert, HTTP_TLS_KEY()) if cert and HTTP_TLS_CA() else None
        return _http(f"{'https' if cert else 'http'}://{_local(HTTP_HOST())}:{HTTP_PORT()}/healthz", identity)
    if role == "worker":
        from pipeline.settings import WORKER_WEB_PORT

        port = WORKER_WEB_PORT()
        if not port:
            return "MEDROUTE_WORKER_WEB_PORT is 0: the worker serves nothing to check (set e.g. 6066)"
        return _http(f"http://127.0.0.1:{port}/")
    if role == "forward":
        from pipeline.forward.settings import HEARTBEAT_MAX_AGE_SECONDS, heartbeat_path

        path = heartbeat_path()
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return f"{path}: no heartbeat (not started, or another MEDROUTE_HOME)"
        return f"{path}: last heartbeat {age:.0f} s ago" if age > HEARTBEAT_MAX_AGE_SECONDS else None
    return None


def main(argv: Sequence[str]) -> int:
    role = argv[0] if argv else role_of_process_one()
    if role not in ("mllp", "dicom", "web", "worker", "forward"):
        print(f"no health check for {role or 'this process'}: healthy while it runs")
        return 0
    found = problem(role)
    print(f"{role}: {found or 'serving'}", file=sys.stderr if found else sys.stdout)
    return 1 if found else 0
