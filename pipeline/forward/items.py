"""The item behind a decision: the HL7 message's bytes (read from its record on ``hl7.inbound``, where the
decision's ``source_offset`` points) or the DICOM Part-10 file (read and decrypted from the blob store the
decision names), with the fields a file name may use. Decisions carry no PHI; the items do."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Protocol

import pydicom
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydicom.errors import InvalidDicomError

from formats.hl7.message import read_header
from medroute.config import KafkaSettings
from medroute.kafka.client import consumer
from medroute.records import Hl7Record, RoutingDecision
from medroute.sealing import BlobError
from pipeline.forward.errors import PermanentError, SourceUnavailableError


class BlobSource(Protocol):
    def get(self, reference: str) -> bytes: ...  # medroute.blobstore.Blobs


@dataclass(frozen=True)
class DicomMeta:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    study_uid: str
    series_uid: str


def dicom_meta(data: bytes) -> DicomMeta:
    """The UIDs of a Part-10 file, read with pydicom; PermanentError when it is not one."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        meta = ds.file_meta
        return DicomMeta(
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            str(meta.TransferSyntaxUID),
            str(ds.get("StudyInstanceUID", "")),
            str(ds.get("SeriesInstanceUID", "")),
        )
    except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
        raise PermanentError("not_dicom", f"the stored dataset cannot be read: {type(exc).__name__}") from None


def read_blob(blobs: BlobSource, reference: str) -> bytes:
    """A blob's bytes; SourceUnavailableError while the store cannot be read (disk, S3: it may be readable
    later), PermanentError for a blob that is missing or altered."""
    try:
        return blobs.get(reference)
    except BlobError as exc:
        if str(exc).startswith("cannot"):
            raise SourceUnavailableError("blob_store_unavailable", str(exc)) from None
        raise PermanentError("blob_unreadable", str(exc)) from None


@dataclass
class Item:
    decision: RoutingDecision
    # HL7: the message as received; DICOM: the Part-10 file as stored, or None when the sender reads it from
    # the blob store itself (the decision names the blob).
    data: bytes | None = field(repr=False)
    # For a sender that reads blobs itself: the blob of the item next in this one's lane, to read ahead.
    next_blob: str | None = None

    @property
    def kind(self) -> str:
        return self.decision.kind

    @property
    def message_id(self) -> str:
        return self.decision.message_id

    def decision_body(self) -> bytes:
        """The decision as JSON, for receivers that asked for the decision."""
        return self.decision.to_json()

    @property
    def content(self) -> bytes:
        """The item's bytes, for senders that take them from the forwarder."""
        assert self.data is not None, "read by the sender itself"
        return self.data

    @cached_property
    def control_id(self) -> str:
        """MSH-10 (HL7 only): what the receiver's ACK must name in MSA-2."""
        return read_header(self.content.decode("latin-1")).control_id if self.kind == "hl7" else ""

    @cached_property
    def dicom(self) -> DicomMeta:
        return dicom_meta(self.content)

    def name_fields(self) -> dict[str, str]:
        """What a folder destination's file name pattern may use."""
        fields = {
            "message_id": self.message_id,
            "kind": self.kind,
            "label": self.decision.label or "none",
            "rule": self.decision.rule,
            "message_type": self.decision.message_type.replace("^", "_"),
            "date": datetime.now(UTC).strftime("%Y%m%d"),
            "ext": "hl7" if self.kind == "hl7" else "dcm",
        }
        if self.kind == "hl7":
            fields["control_id"] = self.control_id
        else:
            meta = self.dicom
            fields.update(sop_instance_uid=meta.sop_instance_uid, study_uid=meta.study_uid, series_uid=meta.series_uid)
        return fields


class InboundRecords:
    """Records of ``hl7.inbound`` read by their place, with a group-less consumer of its own.

    Decisions reach a forwarder in about the order of their records, so each read keeps what came with it
    (the rest of the fetched batch): the next items are then in memory, and a backlog costs a fetch per
    batch, not one per item. :meth:`prefetch` reads a whole batch of decisions' records before their
    deliveries start, so no delivery waits behind another's fetch.
    """

    def __init__(self, kafka: KafkaSettings, keep: int = 20_000) -> None:
        self._kafka = kafka
        self._keep = keep
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._records: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()

    async def start(self) -> None:
        # A short fetch wait: a read after a seek waits for the fetch in flight, which at the log's end is a
        # long poll (500 ms by default); reads happen once per batch of decisions, never in a loop.
        self._consumer = consumer(self._kafka, max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=10)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def get(self, place: str) -> bytes:
        """The value of the record at ``topic:partition:offset``; raises :class:`PermanentError` when the
        log no longer holds it (retention) and :class:`SourceUnavailableError` when Kafka does not answer."""
        topic, partition, offset = _place(place)
        wanted = (topic, partition, offset)
        async with self._lock:
            if wanted not in self._records:
                await self._fetch(TopicPartition(topic, partition), offset)
            value = self._records.get(wanted)
            if value is None:
                await self._check_in_log(TopicPartition(topic, partition), offset, place)
        if value is None:
            raise SourceUnavailableError("kafka_unavailable", f"{place} was not read in time")
        return value

    async def prefetch(self, places: Iterable[str]) -> None:
        """Read the records at ``places`` into memory, one fetch per run of nearby offsets; what cannot be
        read now is left for :meth:`get` to report item by item."""
        missing: dict[tuple[str, int], set[int]] = defaultdict(set)
        for place in places:
            with contextlib.suppress(PermanentError):
                topic, partition, offset = _place(place)
                if (topic, partition, offset) not in self._records:
                    missing[(topic, partition)].add(offset)
        async with self._lock:
            for (topic, partition), offsets in missing.items():
                for offset in sorted(offsets):
                    if (topic, partition, offset) not in self._records:
                        try:
                            await self._fetch(TopicPartition(topic, partition), offset)
                        except SourceUnavailableError:
                            return

    async def _check_in_log(self, tp: TopicPartition, offset: int, place: str) -> None:
        """Raise :class:`PermanentError` if the log no longer (or never) held ``offset``. A fetch that came back
        empty is not proof of that: the consumer answers nothing, not an error, while the broker is down."""
        assert self._consumer is not None
        try:
            first = (await asyncio.wait_for(self._consumer.beginning_offsets([tp]), 10))[tp]
            end = (await asyncio.wait_for(self._consumer.end_offsets([tp]), 10))[tp]
        except (KafkaError, TimeoutError) as exc:
            raise SourceUnavailableError("kafka_unavailable", f"cannot read {tp.topic}: {type(exc).__name__}") from None
        if not first <= offset < end:
            raise PermanentError("item_missing", f"{place} is no longer in the log")

    async def _fetch(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None, "start() first"
        if tp not in self._consumer.assignment():
            self._consumer.assign([*self._consumer.assignment(), tp])
        self._consumer.resume(tp)
        self._consumer.seek(tp, offset)
        try:
            batches = await asyncio.wait_for(self._consumer.getmany(tp, timeout_ms=2000), 10)
        except (KafkaError, TimeoutError) as exc:
            raise SourceUnavailableError("kafka_unavailable", f"cannot read {tp.topic}: {type(exc).__name__}") from None
        finally:
            self._consumer.pause(tp)  # nothing is read ahead until the next seek
        for record in batches.get(tp, []):
            self._records[(tp.topic, tp.partition, record.offset)] = record.value
        while len(self._records) > self._keep:
            self._records.popitem(last=False)


def _place(place: str) -> tuple[str, int, int]:
    try:
        topic, partition, offset = place.rsplit(":", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        raise PermanentError("item_missing", "the decision names no readable source record") from None


class ItemSource:
    """Finds the item of a decision; the blob store is read in a thread (disk or S3, then AES-GCM)."""

    def __init__(self, blobs: BlobSource | None, inbound: InboundRecords | None) -> None:
        self._blobs = blobs
        self._inbound = inbound

    async def prefetch(self, decisions: Iterable[RoutingDecision]) -> None:
        """Read ahead the HL7 records of a batch of decisions (DICOM blobs are read one by one)."""
        if self._inbound is not None:
            await self._inbound.prefetch(d.source_offset for d in decisions if d.kind == "hl7" and d.source_offset)

    async def item(self, decision: RoutingDecision, with_blob: bool = True) -> Item:
        """The item of ``decision``; ``with_blob=False``: a DICOM item whose blob the sender reads itself."""
        if decision.kind == "hl7":
            if not decision.source_offset or self._inbound is None:
                raise PermanentError("item_missing", "the decision names no source record")
            value = await self._inbound.get(decision.source_offset)
            try:
                return Item(decision, Hl7Record.from_json(value).raw)
            except (ValueError, TypeError) as exc:
                raise PermanentError("item_unreadable", f"the source record is not an Hl7Record ({exc})") from None
        if not decision.blob:
            raise PermanentError("item_missing", "the decision names no blob")
        if not with_blob:
            return Item(decision, None)
        if self._blobs is None:
            raise PermanentError("no_blob_store", "this forwarder has no blob store configured")
        return Item(decision, await asyncio.to_thread(read_blob, self._blobs, decision.blob))
