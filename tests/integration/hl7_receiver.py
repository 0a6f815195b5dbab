"""An EHR for the forwarding tests: python-hl7's MLLP server (``hl7.mllp.start_hl7_server``), code this project
did not write. Each message is logged on receipt (``<time> <MSH-10> <PID-3>``, flushed) and answered with
``--ack`` after ``--delay`` seconds. Run: ``python -m tests.integration.hl7_receiver --port P --log FILE``."""

from __future__ import annotations

import argparse
import asyncio
import time

import hl7
from hl7.mllp import start_hl7_server


async def serve(port: int, log_path: str, ack: str, delay: float) -> None:
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the server's life

    async def connected(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                log.write(f"{time.time():.6f} {message.segment('MSH')[10]} {message.segment('PID')[3]}\n")
                if delay:
                    await asyncio.sleep(delay)
                writer.writemessage(message.create_ack(ack))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with await start_hl7_server(connected, "127.0.0.1", port) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ack", default="AA")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.log, args.ack, args.delay))


if __name__ == "__main__":
    main()
