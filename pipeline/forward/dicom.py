"""The ``dicom`` destination: C-STORE SCU (pynetdicom) to a PACS, with the dataset from the blob store.

Each concurrent delivery has a sender process of its own (:mod:`pipeline.forward.dicom_worker`) holding
its own association (:mod:`pipeline.forward.dicom_store` says what goes on it). The forwarder hands a
process the item's blob reference and awaits its answer; the process reads and decrypts the blob itself,
so that no image's bytes, decryption or C-STORE share the forwarder's GIL. The processes start with the
sender (each takes about a second to import pydicom and pynetdicom); one that ends (killed, crashed) or
does not answer in time is replaced by the next delivery, and the attempt counts as retryable. The most
recently used idle process takes the next delivery: a study's images, sent one after the other, keep one
association.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from pipeline.forward import errors
from pipeline.forward.destinations import Destination
from pipeline.forward.errors import RetryableError
from pipeline.forward.frames import frame, read_frame_from
from pipeline.forward.items import Item

_ERRORS: dict[str, type[errors.DeliveryError]] = {
    cls.__name__: cls
    for cls in (errors.UnreachableError, errors.SourceUnavailableError, errors.RetryableError, errors.PermanentError)
}
STOP_SECONDS = 10.0


class DicomSender:
    reads_blobs = True  # the forwarder passes items unread (see pipeline.forward.dicom_worker)

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._idle: asyncio.LifoQueue[_SenderProcess] = asyncio.LifoQueue()
        self._all = [_SenderProcess(destination) for _ in range(destination.concurrency)]
        for process in self._all:
            process.start_soon()
            self._idle.put_nowait(process)

    async def start(self) -> None:
        """Wait until every sender process is up (its imports take about a second): a delivery that waited
        for one would hold its lane. One that cannot start is reported by its first delivery."""
        await asyncio.gather(*(process.started_quietly() for process in self._all))

    async def send(self, item: Item) -> str:
        process = await self._idle.get()
        try:
            return await process.store(item)
        finally:
            self._idle.put_nowait(process)

    async def close(self) -> None:
        await asyncio.gather(*(process.stop() for process in self._all))


class _SenderProcess:
    def __init__(self, destination: Destination) -> None:
        self._destination = destination
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[asyncio.subprocess.Process] | None = None

    def start_soon(self) -> None:
        if self._starting is None:
            self._starting = asyncio.create_task(self._spawn())

    async def store(self, item: Item) -> str:
        try:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            blob = item.decision.blob or ""
            process.stdin.write(frame((blob, item.data, item.next_blob)))
            await process.stdin.drain()
            answer = await read_frame_from(process.stdout)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._kill()
            raise RetryableError("sender_process_ended", f"the sender process ended ({type(exc).__name__})") from None
        except BaseException:  # cancelled or timed out mid-request: its answer would come to the next one
            self._kill()
            raise
        if answer[0] == "ok":
            return str(answer[1])
        kind, code, detail = answer
        raise _ERRORS.get(kind, RetryableError)(code, detail)

    async def _started(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            self.start_soon()
            assert self._starting is not None
            try:
                self._process = await self._starting
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise RetryableError("sender_process_failed", f"cannot start: {exc}") from None
            finally:
                self._starting = None
        return self._process

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.forward.dicom_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(frame(self._destination))
        try:
            await read_frame_from(process.stdout)  # ("ready",): imported, and the blob store opened
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        return process

    async def started_quietly(self) -> None:
        with contextlib.suppress(RetryableError):
            await self._started()

    def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # ended, not yet reaped
                self._process.kill()
        self._process = None

    async def stop(self) -> None:
        """Close its stdin: it releases its association and ends."""
        if self._starting is not None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                self._process = await self._starting
            self._starting = None
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

