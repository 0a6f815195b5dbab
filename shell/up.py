"""``medroute up``: the whole slice on one machine, for a first look and for demos.

Starts the local Kafka broker (unless ``MEDROUTE_KAFKA_BOOTSTRAP`` names a cluster), creates the
topics, runs the MLLP and DICOM listeners, the worker, the forwarders and the web UI as child processes, sends
sample traffic (HL7 messages and the sample images that ship with pydicom), and prints each routing decision as
it is published. Without ``MEDROUTE_DESTINATIONS`` the forwarders get sample destinations: ``pacs`` is a small
local DICOM receiver that ``up`` starts (``$MEDROUTE_HOME/sample-pacs``), every other destination the rules
name is a folder (``$MEDROUTE_HOME/outbox/<name>``). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from listeners.dicom.settings import DICOM_PORT
from listeners.mllp.settings import MLLP_PORT
from medroute.config import ROUTING_DECISIONS, KafkaSettings, child_environment, home_dir
from medroute.ports import free_port, wait_for_port
from pipeline.forward.settings import destinations_from_env
from web.settings import HTTP_PORT


def _spawn(name: str, module: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    log_dir = home_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it open
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=log, stderr=subprocess.STDOUT)


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


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    from medroute.kafka.topics import ensure_topics
    from medroute.logs import configure_logging
    from shell.sending import send_samples

    configure_logging("up")
    settings = KafkaSettings()
    broker = None
    if settings.is_local:
        from shell.broker import LocalBroker

        broker = LocalBroker(data_dir=home_dir() / "kafka", port=settings.local_port)
        print(f"starting local Kafka on {broker.bootstrap} (first run fetches the jars with Maven) ...", flush=True)
        broker.start()
    print(f"creating topics on {settings.bootstrap_servers} ...", flush=True)
    asyncio.run(ensure_topics(settings))

    env = child_environment(MEDROUTE_KAFKA_BOOTSTRAP=settings.bootstrap_servers)
    mllp_port = MLLP_PORT()
    dicom_port = DICOM_PORT()
    children = {
        "MLLP listener": (_spawn("listener-mllp", "listeners.mllp", env), mllp_port),
        "DICOM listener": (_spawn("listener-dicom", "listeners.dicom", env), dicom_port),
    }
    worker = _spawn("worker", "pipeline", env)
    web_env, login = _web_environment(env)
    web_port = HTTP_PORT()
    children["web UI"] = (_spawn("web", "web", web_env), web_port)
    helpers = [worker]
    if destinations_from_env() is None:
        pacs_port = free_port()
        helpers.append(_spawn("sample-pacs", "shell.sample_pacs", env, "--port", str(pacs_port),
                              "--dir", str(home_dir() / "sample-pacs")))  # fmt: skip
        env = {**env, "MEDROUTE_DESTINATIONS": str(sample_destinations(pacs_port))}
    helpers.append(_spawn("forward", "pipeline.forward", env))
    try:
        for name, (child, port) in children.items():
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
              "`medroute forward status` shows each destination", flush=True)  # fmt: skip
        if samples:
            print(f"sending {samples} sample HL7 messages ...", flush=True)
            asyncio.run(send_samples(samples, "127.0.0.1", mllp_port))
            _send_sample_images(dicom_port)
        print("decisions (Ctrl-C to stop):", flush=True)
        asyncio.run(_print_decisions(settings, duration))
    except KeyboardInterrupt:
        pass
    finally:
        for child, _ in children.values():
            _stop(child)
        for helper in reversed(helpers):
            _stop(helper)
        if broker is not None and not keep_kafka:
            broker.stop()
    return 0
