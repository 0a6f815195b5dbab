"""Clean stops: SIGTERM (systemd, Docker, Kubernetes) or SIGINT to a long-running command stops every
process it started, in a bounded time, and frees its ports. ``medroute up`` runs here against the session
broker (so it starts no broker of its own), with two MLLP listener processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from medroute.config import REPO_ROOT, KafkaSettings
from medroute.kafka.client import connection_kwargs
from medroute.ports import free_port, wait_for_port
from shell.up import STOP_GRACE
from tests.tls_pki import make_pki


def _children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    """Running, i.e. neither gone nor a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shell.cli", *argv],
            env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop_and_check(process: subprocess.Popen, signum: int, ports: list[int], log: Path) -> None:
    descendants = _children_of(process.pid)
    assert descendants, "the command started no processes"
    began = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=STOP_GRACE + 15)
    took = time.monotonic() - began
    deadline = time.monotonic() + 5  # a sibling may still be leaving when its parent is gone
    while any(_alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text(errors="replace")
    assert not [pid for pid in descendants if _alive(pid)], text[-3000:]
    assert all(_port_free(port) for port in ports), text[-3000:]
    assert "killed" not in text, text[-3000:]  # every child stopped on its own, none needed SIGKILL
    assert took < STOP_GRACE, took


def test_sigterm_stops_medroute_up_and_all_its_children(kafka: KafkaSettings, tmp_path: Path) -> None:
    mllp, dicom, http = free_port(), free_port(), free_port()
    env = {
        "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "MEDROUTE_HOME": str(tmp_path),
        "MEDROUTE_MLLP_PORT": str(mllp),
        "MEDROUTE_MLLP_PROCESSES": "2",
        "MEDROUTE_DICOM_PORT": str(dicom),
        "MEDROUTE_HTTP_PORT": str(http),
        "MEDROUTE_WORKER_APP_ID": f"clean-stop-{mllp}",
        "ENABLE_AUTH": "false",
        "MEDROUTE_WEB_KAFKA": "0",
    }
    log = tmp_path / "up.out"
    up = _start(["up", "--samples", "0"], env, log)
    try:
        deadline = time.monotonic() + 120
        while "decisions (Ctrl-C to stop)" not in log.read_text(errors="replace"):
            assert up.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        worker_log = tmp_path / "logs" / "worker.log"  # stopped while Faust starts up: the hard case
        while "worker_starting" not in worker_log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.2)
        _stop_and_check(up, signal.SIGTERM, [mllp, dicom, http], log)
    finally:
        if up.poll() is None:
            up.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_listeners_in_several_processes_stop_on_a_signal(kafka: KafkaSettings, tmp_path: Path, signum: int) -> None:
    mllp, dicom = free_port(), free_port()
    env = {
        "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "MEDROUTE_HOME": str(tmp_path),
        "MEDROUTE_MLLP_PORT": str(mllp),
        "MEDROUTE_MLLP_PROCESSES": "2",
        "MEDROUTE_DICOM_PORT": str(dicom),
        "MEDROUTE_DICOM_PROCESSES": "2",
        "MEDROUTE_BLOB_KEY": "00" * 32,
    }
    log = tmp_path / "listen.out"
    listeners = [_start(["listen", kind], env, log) for kind in ("mllp", "dicom")]
    try:
        wait_for_port(mllp, 60, listeners[0])
        wait_for_port(dicom, 60, listeners[1])
        time.sleep(1)  # let the sibling processes start
        for listener, port in zip(listeners, (mllp, dicom), strict=True):
            _stop_and_check(listener, signum, [port], log)
    finally:
        for listener in listeners:
            if listener.poll() is None:
                listener.kill()


def test_children_of_up_end_when_up_is_killed(tmp_path: Path) -> None:
    """``up`` killed with SIGKILL runs no clean-up, yet its children go: the kernel sends them SIGTERM."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from shell.up import _spawn; "
            "child = _spawn('orphan-check', 'listeners.mllp', dict(__import__('os').environ)); "
            "print(child.pid, flush=True); time.sleep(120)",
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "MEDROUTE_HOME": str(tmp_path),
            "MEDROUTE_MLLP_PORT": str(free_port()),
            "MEDROUTE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing there: the child just waits
        },
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


# -- `medroute worker` and `medroute web` on their own (systemd units, one container each) ------------------------


async def _group(kafka: KafkaSettings, group: str) -> tuple[str, int]:
    """The consumer group's state and how many members it has, as the broker describes it."""
    admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except GroupCoordinatorNotAvailableError:  # a fresh broker creates its offsets topic on first use
        return "no coordinator yet", 0
    finally:
        await admin.close()
    described = response.to_object()["groups"][0]
    return described["state"], len(described["members"])


def _stop_alone(process: subprocess.Popen, log: Path) -> float:
    """SIGTERM to a command started on its own; it must exit by itself with status 0. Returns how long it took."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        text = log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no exit within {STOP_GRACE:.0f}s of SIGTERM\n{text}") from None
    assert status == 0, log.read_text(errors="replace")[-3000:]
    return time.monotonic() - began


def test_worker_alone_stops_on_sigterm_and_leaves_its_group(kafka: KafkaSettings, tmp_path: Path) -> None:
    group = f"clean-stop-worker-{free_port()}"
    env = {"MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers, "MEDROUTE_HOME": str(tmp_path),
           "MEDROUTE_WORKER_APP_ID": group}  # fmt: skip
    log = tmp_path / "worker.out"
    worker = _start(["worker"], env, log)
    try:
        deadline = time.monotonic() + 120
        while asyncio.run(_group(kafka, group)) != ("Stable", 1):  # joined, partitions assigned
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        took = _stop_alone(worker, log)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert asyncio.run(_group(kafka, group)) == ("Empty", 0), "the worker did not leave its group"
    assert '"worker_stopped"' in log.read_text(errors="replace") and took < STOP_GRACE


def test_web_alone_stops_on_sigterm_with_a_client_connected(tmp_path: Path) -> None:
    """Over HTTPS, with a client keeping an idle connection open (a script's pool): the TLS close waits for an
    answer that client never reads, which held the stop for 30 s until the server bounded it."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    env = {"MEDROUTE_HOME": str(tmp_path), "MEDROUTE_HTTP_PORT": str(port), "MEDROUTE_WEB_KAFKA": "0",
           "ENABLE_AUTH": "false", "MEDROUTE_HTTP_TLS_CERT": str(pki.server_cert),
           "MEDROUTE_HTTP_TLS_KEY": str(pki.server_key)}  # fmt: skip
    log = tmp_path / "web.out"
    web = _start(["web"], env, log)
    try:
        wait_for_port(port, 120, web)
        with requests.Session() as client:  # its connection stays open, idle, until the session closes
            assert client.get(f"https://127.0.0.1:{port}/healthz", verify=str(pki.ca), timeout=10).ok
            took = _stop_alone(web, log)
    finally:
        if web.poll() is None:
            web.kill()
    assert _port_free(port) and took < STOP_GRACE
