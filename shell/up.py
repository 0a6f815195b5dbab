"""``medroute up``: the whole slice on one machine, for a first look and for demos.

Starts the local Kafka broker (unless ``MEDROUTE_KAFKA_BOOTSTRAP`` names a cluster), creates the topics, runs
the MLLP and DICOM listeners, the worker, the forwarders and the web UI as child processes, sends sample traffic
(HL7 messages and the sample images that ship with pydicom), and prints each routing decision as it is
published. Without ``MEDROUTE_DESTINATIONS`` the forwarders get sample destinations: ``pacs`` is a small local
DICOM receiver that ``up`` starts (``$MEDROUTE_HOME/sample-pacs``), every other destination the rules name is a
folder (``$MEDROUTE_HOME/outbox/<name>``).

Ctrl-C (SIGINT) or SIGTERM (what systemd, Docker and Kubernetes send) stops everything it started, in a bounded
time: the children get SIGTERM together, then SIGKILL after ``STOP_GRACE`` seconds. The children also get
SIGTERM from the kernel if ``up`` itself dies (PR_SET_PDEATHSIG), so even a kill -9 of ``up`` leaves no
listener holding its port.
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from listeners.dicom.settings import DICOM_PORT
from listeners.mllp.settings import MLLP_PORT
from medroute.config import ROUTING_DECISIONS, KafkaSettings, child_environment, home_dir
from medroute.ports import free_port, wait_for_port
from pipeline.forward.settings import destinations_from_env
from web.settings import HTTP_PORT

if TYPE_CHECKING:
    from shell.broker import LocalBroker


STOP_GRACE = 20.0  # seconds the children get to finish (ACKs in flight, producer flushes) before SIGKILL
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the forked child, before exec: SIGTERM when ``up`` goes, however it goes."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(name: str, module: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    log_dir = home_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # prctl only, safe: up runs no threads of its own at this point
        )


def sample_destinations(pacs_port: int) -> Path:
    """A destinations file for every destination the routing rules name: ``pacs`` the sample PACS, the rest
    folders under ``$MEDROUTE_HOME/outbox``."""
    from pipeline.rules import load_rules
    from shell.sample_pacs import AE_TITLE

    names = sorted({name for rule in load_rules().rules for name in rule.destinations})
    outbox = home_dir() / "outbox"
    lines = ["# Written by `medroute up`: sample destinations. Set MEDROUTE_DESTINATIONS to use your own.",
             "destinations:"]  # fmt: skip
    for name in names:
        if name == "pacs":
            lines.append(f"  pacs: {{type: dicom, host: 127.0.0.1, port: {pacs_port}, called_ae: {AE_TITLE}}}")
        else:
            lines.append(f"  {name}: {{type: folder, path: '{outbox / name}'}}")
    path = home_dir() / "destinations.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def stop_children(children: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM to every child at once, then wait for them together, SIGKILL what is left after ``grace``."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{' '.join(map(str, child.args))} did not stop within {grace:.0f}s: killed", flush=True)
            child.kill()
            child.wait()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops ``up`` as Ctrl-C does: through its ``finally``, which stops the children."""
    raise KeyboardInterrupt


def _describe(decision: dict) -> str:
    label = decision.get("label") or "-"
    confidence = decision.get("confidence")
    shown = f"{label} ({confidence:.2f})" if confidence is not None else label
    destinations = ", ".join(decision.get("destinations") or []) or "-"
    return f"{decision.get('message_type', '?'):<18} {shown:<36} rule={decision.get('rule')} -> {destinations}"


async def _print_decisions(settings: KafkaSettings, duration: float | None) -> None:

    from medroute.kafka.client import reader_of
    from shell.tail import record_as_json

    reader = await reader_of(settings, ROUTING_DECISIONS)
    try:
        deadline = time.monotonic() + duration if duration else None
        while deadline is None or time.monotonic() < deadline:
            batches = await reader.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    print("decision:", _describe(record_as_json(record)["value"]), flush=True)
    finally:
        await reader.stop()


def _send_sample_images(port: int) -> None:
    from listeners.dicom.settings import DICOM_AE_TITLE
    from shell.dicom_sending import sample_dicom_files, send_dicom

    files = sample_dicom_files()
    print(f"sending {len(files)} sample DICOM images ...", flush=True)
    send_dicom(files, "127.0.0.1", port, DICOM_AE_TITLE())


def _web_environment(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The web server's environment, and how to log in: with authentication on and no account configured,
    an admin ``admin`` whose random password is kept in ``$MEDROUTE_HOME/secrets/web-admin-password``."""
    import secrets

    from web.settings import WebSettings

    settings = WebSettings()
    if not settings.auth:
        return env, "authentication off"
    if (settings.admin_username and settings.admin_password) or settings.users_file.is_file():
        return env, "log in with your account"
    secret = home_dir() / "secrets" / "web-admin-password"
    if not secret.is_file():
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_urlsafe(12) + "\n", encoding="utf-8")
    return {**env, "USERNAME": "admin", "PASSWORD_FILE": str(secret)}, f"log in as admin, password in {secret}"


def run_up(samples: int = 20, duration: float | None = None, keep_kafka: bool = False) -> int:
    from medroute.logs import configure_logging
    from shell.broker import LocalBroker

    configure_logging("up")
    signal.signal(signal.SIGTERM, _interrupt)
    settings = KafkaSettings()
    broker = LocalBroker(data_dir=home_dir() / "kafka", port=settings.local_port) if settings.is_local else None
    children: list[subprocess.Popen] = []
    try:
        _run(settings, broker, children, samples, duration)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short; it is bounded by STOP_GRACE.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_children(children)
        if broker is not None and not keep_kafka:
            broker.stop()
    return 0


def _run(
    settings: KafkaSettings,
    broker: LocalBroker | None,
    children: list[subprocess.Popen],
    samples: int,
    duration: float | None,
) -> None:
    """Start the broker (if local) and everything else, each child appended to ``children`` as soon as it
    exists so that an interruption at any point stops it; send the samples, print decisions."""
    from medroute.kafka.topics import ensure_topics
    from shell.sending import send_samples

    if broker is not None:
        print(f"starting local Kafka on {broker.bootstrap} (first run fetches the jars with Maven) ...", flush=True)
        broker.start()
    print(f"creating topics on {settings.bootstrap_servers} ...", flush=True)
    asyncio.run(ensure_topics(settings))

    env = child_environment(MEDROUTE_KAFKA_BOOTSTRAP=settings.bootstrap_servers)
    web_env, login = _web_environment(env)
    mllp_port, dicom_port, web_port = MLLP_PORT(), DICOM_PORT(), HTTP_PORT()
    if destinations_from_env() is None:
        pacs_port = free_port()
        children.append(_spawn("sample-pacs", "shell.sample_pacs", env, "--port", str(pacs_port),
                               "--dir", str(home_dir() / "sample-pacs")))  # fmt: skip
        env = {**env, "MEDROUTE_DESTINATIONS": str(sample_destinations(pacs_port))}
    served = {
        "MLLP listener": ("listener-mllp", "listeners.mllp", env, mllp_port),
        "DICOM listener": ("listener-dicom", "listeners.dicom", env, dicom_port),
        "worker": ("worker", "pipeline", env, None),
        "forwarders": ("forward", "pipeline.forward", env, None),
        "web UI": ("web", "web", web_env, web_port),
    }
    waits = []
    for name, (log_name, module, child_env, port) in served.items():
        children.append(_spawn(log_name, module, child_env))
        if port is not None:
            waits.append((name, children[-1], port))
    for name, child, port in waits:
        try:
            wait_for_port(port, 60, child)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"the {name} did not start ({exc}); see {home_dir() / 'logs'}") from None
    print(
        f"MLLP listener on 127.0.0.1:{mllp_port}, DICOM listener on 127.0.0.1:{dicom_port}; worker and "
        f"forwarders started (destinations: {env['MEDROUTE_DESTINATIONS']}); logs in {home_dir() / 'logs'}",
        flush=True,
    )
    print(f"web UI and API on http://127.0.0.1:{web_port} ({login})", flush=True)
    print(f"forwarded items arrive in {home_dir() / 'sample-pacs'} and {home_dir() / 'outbox'}; "
          f"each destination: http://127.0.0.1:{web_port}/destinations or `medroute forward status`",
          flush=True)  # fmt: skip
    if samples:
        print(f"sending {samples} sample HL7 messages ...", flush=True)
        asyncio.run(send_samples(samples, "127.0.0.1", mllp_port))
        _send_sample_images(dicom_port)
    print("decisions (Ctrl-C to stop):", flush=True)
    asyncio.run(_print_decisions(settings, duration))
