"""The dicom destination's sender processes: answers cross the process boundary as the forwarder's error
classes, a process that dies is replaced, and a blob store that cannot be read is not the receiver's fault."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.data import get_testdata_file

from medroute.blobstore import BlobStore
from medroute.ports import free_port
from medroute.sealing import BlobError
from pipeline.forward.destinations import Destination, parse_destinations
from pipeline.forward.dicom import DicomSender
from pipeline.forward.dicom_store import StoreAssociation
from pipeline.forward.dicom_worker import BlobReader, answer
from pipeline.forward.errors import PermanentError, RetryableError, SourceUnavailableError, UnreachableError
from pipeline.forward.items import Item

KEY = bytes(range(32))


def destination(port: int, concurrency: int = 1) -> Destination:
    text = f"destinations:\n  pacs: {{type: dicom, host: 127.0.0.1, port: {port}, called_ae: X, timeout: 2,"
    return parse_destinations(f"{text} concurrency: {concurrency}}}\n").by_name["pacs"]


def unread(blob: str) -> Item:
    return Item(SimpleNamespace(blob=blob), None)  # type: ignore[arg-type]


@pytest.fixture
def blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MEDROUTE_BLOB_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("MEDROUTE_BLOB_KEY", KEY.hex())
    return BlobStore(tmp_path / "blobs", KEY).put(Path(get_testdata_file("CT_small.dcm")).read_bytes())


async def test_an_answer_comes_back_as_the_same_error_class_and_a_dead_process_is_replaced(blob: str) -> None:
    sender = DicomSender(destination(free_port()))  # nobody listens there
    try:
        with pytest.raises(UnreachableError):
            await sender.send(unread(blob))
        first = sender._all[0]._process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        with pytest.raises((RetryableError, UnreachableError)):  # ended mid-request, or replaced at once
            await sender.send(unread(blob))
        with pytest.raises(UnreachableError):
            await sender.send(unread(blob))
        assert sender._all[0]._process is not None and sender._all[0]._process.pid != first.pid
    finally:
        await sender.close()
    assert all(process._process is None for process in sender._all)


async def test_a_blob_that_is_not_there_is_refused_by_the_process(blob: str) -> None:
    sender = DicomSender(destination(free_port()))
    try:
        with pytest.raises(PermanentError) as refused:
            await sender.send(unread("sha256:" + "0" * 64))
        assert refused.value.code == "blob_unreadable"
    finally:
        await sender.close()


class DownStore:
    def get(self, reference: str) -> bytes:
        raise BlobError(f"cannot read blob {reference}: Input/output error")


def test_a_store_that_cannot_be_read_is_a_source_outage_not_a_failed_attempt() -> None:
    store = StoreAssociation(destination(free_port()))
    assert answer(store, BlobReader(DownStore()), "sha256:" + "0" * 64, None, None)[:2] == (
        SourceUnavailableError.__name__,
        "blob_store_unavailable",
    )
    assert answer(store, BlobReader(None), "sha256:" + "0" * 64, None, None)[0] == SourceUnavailableError.__name__
    assert not store.is_open  # nothing reached the receiver


class DefectiveStore:
    destination = SimpleNamespace(name="pacs")
    released = False

    def store(self, data: bytes) -> str:
        raise KeyError("PatientName=DOE^JANE")  # what a defect's message could quote

    def release(self) -> None:
        self.released = True


def test_a_defect_is_retried_and_told_by_its_type_only(capsys: pytest.CaptureFixture[str]) -> None:
    store = DefectiveStore()
    answered = answer(store, BlobReader(None), "", b"DICM", None)  # type: ignore[arg-type]
    assert answered == ("RetryableError", "sender_error", "KeyError")
    assert store.released
    assert "DOE" not in capsys.readouterr().err


class CountingStore:
    def __init__(self, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.reads: list[str] = []
        self.failing = set(failing)

    def get(self, reference: str) -> bytes:
        self.reads.append(reference)
        if reference in self.failing:
            self.failing.discard(reference)  # fails once
            raise BlobError(f"cannot read blob {reference}: Input/output error")
        return reference.encode()


def test_the_next_blob_of_a_lane_is_read_once_ahead_and_a_wrong_guess_costs_nothing_but_its_read() -> None:
    store = CountingStore()
    reader = BlobReader(store)
    reader.read_ahead("b")
    assert reader.read("b") == b"b"
    reader.read_ahead("c")
    assert reader.read("d") == b"d"  # another process took c's turn
    assert store.reads.count("b") == 1 and store.reads.count("d") == 1  # c: read ahead, then dropped


def test_a_read_ahead_that_failed_is_read_again_and_its_error_is_the_items() -> None:
    store = CountingStore(failing={"b"})
    reader = BlobReader(store)
    reader.read_ahead("b")
    assert reader.read("b") == b"b"
    assert store.reads == ["b", "b"]


async def test_a_signal_to_the_process_group_leaves_the_sender_to_its_forwarder(blob: str) -> None:
    sender = DicomSender(destination(free_port()))
    try:
        await sender.start()
        process = sender._all[0]._process
        assert process is not None
        for signum in (signal.SIGINT, signal.SIGTERM):  # a Ctrl-C in a terminal, systemd's stop of the cgroup
            os.kill(process.pid, signum)
        with pytest.raises(UnreachableError):  # still serving
            await sender.send(unread(blob))
        assert sender._all[0]._process is process
    finally:
        await sender.close()  # closing stdin ends it
    assert process.returncode == 0
