#!/usr/bin/env python3
"""Runs the installed medroute units' commands where systemd is not process 1 (a container, a CI runner):
each unit's ExecStart as its User=, with its EnvironmentFile=, Environment= and LoadCredential= (copied to a
private directory that stands for %d), in dependency order; waits until each serves; then sends sample HL7
and prints the decisions, and stops everything (ExecStop= where a unit has one, else SIGTERM).

    sudo deploy/systemd/install.sh --no-start && sudo deploy/systemd/run-without-systemd.py

The hardening directives themselves need systemd; `systemd-analyze verify` checks them (install.sh runs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNITS = Path("/etc/systemd/system")
PORTS = {"medroute-mllp": "MEDROUTE_MLLP_PORT", "medroute-dicom": "MEDROUTE_DICOM_PORT",
         "medroute-web": "MEDROUTE_HTTP_PORT", "medroute-worker@1": "MEDROUTE_WORKER_WEB_PORT"}  # fmt: skip
ORDER = ["medroute-kafka", "medroute-topics", "medroute-mllp", "medroute-dicom", "medroute-worker@1", "medroute-web"]


def read_unit(name: str) -> dict[str, list[str]]:
    template = name.split("@")[0] + "@.service" if "@" in name else f"{name}.service"
    entries: dict[str, list[str]] = {}
    for line in (UNITS / template).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            entries.setdefault(key, []).append(value.replace("%i", name.partition("@")[2]))
    return entries


def environment(entries: dict[str, list[str]], credentials: Path) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for path in entries.get("EnvironmentFile", []):
        for line in Path(path).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip()
    for assignment in entries.get("Environment", []):
        key, value = assignment.split("=", 1)
        env[key] = value.replace("%d", str(credentials))
    return env


def serving(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(port: int, seconds: float, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if serving(port):
            return
        if process is not None and process.poll() is not None:
            raise SystemExit(f"exited with {process.returncode} before serving on {port}")
        time.sleep(0.5)
    raise SystemExit(f"nothing serves on {port} after {seconds:.0f}s")


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("run as root (each unit's command runs as its User=)")
    scratch = Path(tempfile.mkdtemp(prefix="medroute-units-"))
    os.chmod(scratch, 0o755)
    started: list[tuple[str, subprocess.Popen | None, dict[str, list[str]], dict[str, str]]] = []
    try:
        for name in ORDER:
            entries = read_unit(name)
            user = pwd.getpwnam(entries["User"][0])
            credentials = scratch / name
            credentials.mkdir()
            for spec in entries.get("LoadCredential", []):
                label, source = spec.split(":", 1)
                shutil.copy(source, credentials / label)
                os.chown(credentials / label, user.pw_uid, user.pw_gid)
                os.chmod(credentials / label, 0o400)
            os.chown(credentials, user.pw_uid, user.pw_gid)
            os.chmod(credentials, 0o500)
            env = environment(entries, credentials)
            command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--",
                       *entries["ExecStart"][0].split()]  # fmt: skip
            workdir = entries.get("WorkingDirectory", ["/"])[0]
            Path(workdir).mkdir(parents=True, exist_ok=True)
            os.chown(workdir, user.pw_uid, user.pw_gid)
            print(f"== {name}: {' '.join(command[5:])} (as {user.pw_name})", flush=True)
            kind = entries.get("Type", ["simple"])[0]
            if kind in ("forking", "oneshot"):
                subprocess.run(command, env=env, cwd=workdir, check=True, timeout=240)
                started.append((name, None, entries, env))
                continue
            log = open(scratch / f"{name}.log", "wb")  # noqa: SIM115 - open while the child runs
            process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
            started.append((name, process, entries, env))
            port = PORTS[name]
            wait_for(int(env[port]), 120, process)
            health = subprocess.run([entries["ExecStart"][0].split()[0], "health", name.split("-")[1].split("@")[0]],
                                    env=env, capture_output=True, text=True)  # fmt: skip
            print(f"   serving on {env[port]}; medroute health: {(health.stdout + health.stderr).strip()}", flush=True)
        medroute = started[0][2]["ExecStart"][0].split()[0]
        env = started[2][3]
        print("== sending 5 sample HL7 messages", flush=True)
        subprocess.run([medroute, "send", "--samples", "5"], env=env, check=True, timeout=120)
        tail = subprocess.run([medroute, "tail", "routing.decisions", "--from-beginning", "--max", "5",
                               "--timeout", "60"], env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
        decisions = [line for line in tail.stdout.splitlines() if line.strip()]
        print(f"== {len(decisions)} decisions on routing.decisions, e.g.\n{decisions[0] if decisions else '(none)'}")
        return 0 if decisions else 1
    finally:
        for name, process, entries, env in reversed(started):
            if "ExecStop" in entries:
                user = pwd.getpwnam(entries["User"][0])
                subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--",
                                *entries["ExecStop"][0].split()], env=env, cwd="/", timeout=90)  # fmt: skip
            elif process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
            print(f"== stopped {name}", flush=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
