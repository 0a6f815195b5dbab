"""A ``dicom`` destination's sender process: one association, and the images sent on it one at a time.

``medroute forward`` starts one per concurrent delivery (:mod:`pipeline.forward.dicom`). A request names
the item's blob, which this process reads and decrypts itself: the image's bytes never pass through the
forwarder's process, whose event loop, Kafka clients and other associations would otherwise share one
GIL with every image's read, decryption and C-STORE (that sharing had held four associations to about a
third of what they do apart).

Protocol, on stdin and stdout (stdout is kept for it; anything printed goes to stderr), in the frames of
:mod:`pipeline.forward.frames`. The first frame is the :class:`Destination`; each further frame a request
``(blob reference, Part-10 bytes or None, the blob of the next image in its lane or None)``; each answer
``("ok", outcome)`` or ``(error class name, code, detail)``; the first answer, once this process is ready,
is ``("ready",)``. The process ends when stdin closes (its forwarder stopped or died), on no signal but
SIGKILL. An association left unused for ``IDLE_RELEASE_SECONDS`` is released: many PACS (storescp among
them) serve few at a time.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from medroute import blobstore
from medroute.fileio import write_all
from medroute.logs import configure_logging
from medroute.sealing import BlobError
from pipeline.forward.dicom_store import StoreAssociation
from pipeline.forward.errors import DeliveryError, SourceUnavailableError
from pipeline.forward.frames import frame, read_frame
from pipeline.forward.items import BlobSource, read_blob

log = structlog.get_logger(__name__)

IDLE_RELEASE_SECONDS = 2.0


class BlobReader:
    """Reads each image's blob; the next one of its lane, when the forwarder names it, in a thread while this
    image goes out (the read, decryption and digest are about a third of an image's time here)."""

    def __init__(self, blobs: BlobSource | None) -> None:
        self._blobs = blobs
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
        self._ahead: tuple[str, Future[bytes]] | None = None

    def read(self, reference: str) -> bytes:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == reference:
            with contextlib.suppress(DeliveryError):  # read again below: the error is this item's to report
                return ahead[1].result()
        return self._read(reference)

    def read_ahead(self, reference: str) -> None:
        self._ahead = (reference, self._thread.submit(self._read, reference))

    def _read(self, reference: str) -> bytes:
        if self._blobs is None:
            raise SourceUnavailableError("blob_store_unavailable", "the blob store cannot be opened")
        return read_blob(self._blobs, reference)


def answer(
    store: StoreAssociation, reader: BlobReader, reference: str, data: bytes | None, following: str | None
) -> tuple:
    """One request's answer: ``data``, or the blob ``reference`` names, sent; ``following`` read meanwhile."""
    try:
        if data is None:
            data = reader.read(reference)
        if following:
            reader.read_ahead(following)
        return ("ok", store.store(data))
    except DeliveryError as exc:
        return (type(exc).__name__, exc.code, exc.detail)
    except Exception as exc:  # a defect: its message may quote the dataset, so only its type is told
        log.error("sender_error", destination=store.destination.name, error=type(exc).__name__)
        store.release()  # in whatever state the defect left it
        return ("RetryableError", "sender_error", type(exc).__name__)


def serve(requests: int, answers: int) -> None:
    destination = read_frame(requests)
    if destination is None:
        return
    store = StoreAssociation(destination)
    try:
        blobs: BlobSource | None = blobstore.from_env()
    except BlobError as exc:
        log.error("blob_store_unavailable", destination=destination.name, error=str(exc))
        blobs = None
    reader = BlobReader(blobs)
    write_all(answers, frame(("ready",)))
    try:
        while True:
            if store.is_open and not select.select([requests], [], [], IDLE_RELEASE_SECONDS)[0]:
                store.release()
                continue
            request = read_frame(requests)
            if request is None:
                return
            write_all(answers, frame(answer(store, reader, *request)))
    finally:
        store.release()


def main() -> int:
    # The forwarder ends this process (by closing stdin) once its deliveries are over: a Ctrl-C or a SIGTERM
    # sent to the whole process group or cgroup must not cut a C-STORE short, nor print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging("forward")
    answers = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not break the protocol
    with contextlib.suppress(BrokenPipeError):  # the forwarder is gone
        serve(sys.stdin.fileno(), answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
