"""``POST /api/classify`` for text against the same classifier called in-process, in the same run.

    python -m tools.benchmarks.web [--seconds 10] [--clients 16] [--rate 100] [--model doctype-en]

Starts ``medroute web`` as its own process on a free port (authentication on, an API token; no Kafka:
the classify path does not touch it), then measures with texts of the mtsamples dev set, each made
unique so that no cache answers:

* in-process: ``TextClassifier.predict([text])``, one text per call, one caller;
* HTTP, closed loop: ``--clients`` keep-alive connections, each sending its next request when the last
  is answered (JSON ``{"text": ...}``): requests/s;
* HTTP, open loop: requests sent at ``--rate`` per second on a schedule, latency counted from the
  scheduled time (so a stall is not hidden): p50/p99.

The client is a minimal HTTP/1.1 client on asyncio streams, so that the load generator's own cost (it
shares the machine's cores with the server) stays small. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medroute.config import REPO_ROOT, child_environment
from medroute.ports import free_port, wait_for_port
from models.text import TextClassifier
from web.users import Role, add_token

DEV_SET = REPO_ROOT / "data" / "mtsamples" / "doctype_dev.csv"


def texts(count: int) -> list[str]:
    with DEV_SET.open(encoding="utf-8", newline="") as handle:
        base = [row["text"][:2000] for row in csv.DictReader(handle)]
    return [f"{base[n % len(base)]}\n(copy {n})" for n in range(count)]


def in_process(model: str, items: list[str], seconds: float) -> float:
    classifier = TextClassifier.load(model)
    classifier.cache_size = 0
    classifier.predict(items[:8])  # warm up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds and done < len(items):
        classifier.predict([items[done]])
        done += 1
    return done / (time.perf_counter() - started)


class Connection:
    """One keep-alive HTTP/1.1 connection that posts JSON and reads the (Content-Length) answer."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (
            f"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        )

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, text: str) -> int:
        body = json.dumps({"text": text, "task_type": "text_classification"}).encode()
        self.writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def closed_loop(port: int, token: str, items: list[str], clients: int, seconds: float) -> tuple[float, int]:
    connections = [await Connection(port, token).open() for _ in range(clients)]
    position, failures = 0, 0
    deadline = time.perf_counter() + seconds

    async def client(connection: Connection) -> int:
        nonlocal position, failures
        done = 0
        while time.perf_counter() < deadline:
            text = items[position % len(items)]
            position += 1
            failures += await connection.post(text) != 200
            done += 1
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return sum(counts) / elapsed, failures


async def open_loop(port: int, token: str, items: list[str], rate: float, seconds: float) -> tuple[list[float], int]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(await Connection(port, token).open())
    latencies: list[float] = []
    failures = 0

    async def one(text: str, scheduled: float) -> None:
        nonlocal failures
        connection = await pool.get()
        try:
            failures += await connection.post(text) != 200
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        scheduled = started + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(items[n % len(items)], scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return latencies, failures


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmarks.web", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--model", default="doctype-en")
    args = parser.parse_args(argv)

    items = texts(int(max(args.rate, 3000) * args.seconds * 3))
    with tempfile.TemporaryDirectory(prefix="medroute-bench-web-") as home:
        token = add_token(Path(home) / "tokens", "bench", Role.viewer)
        port = free_port()
        env = child_environment(
            MEDROUTE_HOME=home,
            MEDROUTE_HTTP_PORT=str(port),
            MEDROUTE_WEB_TOKENS_FILE=str(Path(home) / "tokens"),
            MEDROUTE_WEB_KAFKA="0",
            MEDROUTE_TEXT_MODEL=args.model,
            ENABLE_AUTH="true",
            PYTHONPATH=str(REPO_ROOT),
        )
        server = subprocess.Popen([sys.executable, "-m", "web"], env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, 60, server)
            rate_in_process = in_process(args.model, items, args.seconds)
            asyncio.run(closed_loop(port, token, items[-2000:], args.clients, 1.0))  # warm up
            rate_http, closed_failures = asyncio.run(closed_loop(port, token, items, args.clients, args.seconds))
            latencies, open_failures = asyncio.run(open_loop(port, token, items[::-1], args.rate, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=20)
    load = os.getloadavg()[0]
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    share = rate_http / rate_in_process
    print("| measure | value | floor |\n|---|---|---|")
    print(f"| in-process `predict([text])`, one text per call | {rate_in_process:,.0f} texts/s | |")
    http = f"{rate_http:,.0f} req/s ({share:.0%} of in-process)"
    print(f"| `POST /api/classify`, {args.clients} clients | {http} | ≥ 50 % |")
    print(f"| `POST /api/classify` at {args.rate:.0f} req/s: p50 / p99 | {p50:.1f} ms / {p99:.1f} ms | p99 ≤ 50 ms |")
    failures = closed_failures + open_failures
    print(f"\nfailures: {failures}; load average at the end: {load:.2f} ({os.cpu_count()} cores)")
    ok = share >= 0.5 and p99 <= 50 and not failures
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
