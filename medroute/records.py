"""The records that travel on Kafka topics, and their JSON form.

One envelope per inbound item (``Hl7Record``), one ``RoutingDecision`` per item decided,
``AuditEvent``s for who/what/when, and ``DeadLetter`` for anything that could not be taken.
Raw bytes travel base64-encoded so that a record is plain JSON that any consumer can read.
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import orjson

SCHEMA_VERSION = 1

T = TypeVar("T", bound="_JsonRecord")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _Ids:
    """32 hex digits: 64 random bits drawn once per process, then a counter (``uuid4().hex``'s form).

    Unique across processes and restarts (the random half) without a system call per id, which
    cost more than the rest of building an audit event. Reset in a forked child.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_IDS = _Ids()
os.register_at_fork(after_in_child=_IDS.reset)


def new_id() -> str:
    """A new id for a record or an event, unique across processes and restarts."""
    return _IDS.next()


@cache
def _layout(cls: type) -> tuple[tuple[str, ...], frozenset[str]]:
    """Field names of a record class, and those holding bytes (read once per class: this runs per
    message on the listener's acknowledge path and several times per record in the worker)."""
    names = tuple(f.name for f in fields(cls))
    return names, frozenset(f.name for f in fields(cls) if f.type in ("bytes", bytes))


_ID_PREFIX = b'{"message_id":"'  # to_json writes fields in order: most records' first is message_id


def message_id_of(value: bytes | None) -> str | None:
    """The message id of a stored record (inbound record, decision, dead letter), read without parsing its
    (possibly large) JSON when it comes first, as :meth:`_JsonRecord.to_json` writes it."""
    if not value:
        return None
    if value.startswith(_ID_PREFIX):
        end = value.find(b'"', len(_ID_PREFIX))
        if end > 0:
            return value[len(_ID_PREFIX) : end].decode("ascii", "replace")
    try:
        found = orjson.loads(value).get("message_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, str) else None


class _JsonRecord:
    """JSON (de)serialisation shared by the record dataclasses; ``bytes`` fields go as base64."""

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict: asdict deep-copies.
        names, binary = _layout(type(self))
        data = {name: getattr(self, name) for name in names}
        for name in binary:
            value = data[name]
            if isinstance(value, bytes):
                data[name] = base64.b64encode(value).decode("ascii")
        return data

    def to_json(self) -> bytes:
        # orjson: compact UTF-8 like json.dumps(ensure_ascii=False) at a fraction of the cost (the
        # worker writes four records per message); integer keys (partition numbers) become strings.
        return orjson.dumps(self.to_dict(), option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names, binary = _layout(cls)
        kwargs = {name: data[name] for name in names if name in data}
        for name in binary:
            value = kwargs.get(name)
            if isinstance(value, str):
                kwargs[name] = base64.b64decode(value)
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], payload: bytes | str) -> T:
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise TypeError(f"a {cls.__name__} is a JSON object, not {type(data).__name__}")
        return cls.from_dict(data)


@dataclass(frozen=True)
class Hl7Record(_JsonRecord):
    """An HL7 v2 message as received over MLLP, stored before it is acknowledged."""

    message_id: str
    raw: bytes  # the exact bytes between 0x0B and 0x1C 0x0D
    charset: str  # MSH-18 as sent ("" when absent)
    encoding: str  # the Python codec the listener decoded with
    received_at: str
    peer: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # MSH-9, e.g. "ORU^R01^ORU_R01"
    control_id: str  # MSH-10
    version: str  # MSH-12
    # The codec assumed when MSH-18 was empty and the bytes were not what the site default reads
    # (None: MSH-18 or the default covered them); ``encoding`` is then that codec.
    charset_assumed: str | None = None
    schema: int = SCHEMA_VERSION
    kind: str = "hl7"

    def text(self) -> str:
        return self.raw.decode(self.encoding)


@dataclass(frozen=True)
class RoutingDecision(_JsonRecord):
    """What medroute decided about one item, with everything needed to explain it."""

    message_id: str
    kind: str  # "hl7" | "dicom"
    message_type: str
    model: str | None  # "name@version", None for decisions made from metadata alone
    label: str | None
    confidence: float | None
    rule: str  # name of the routing rule that fired
    destinations: list[str]
    decided_at: str = field(default_factory=utc_now)
    # Set when part of the item could not be read, e.g. "extraction_failed" (an embedded document).
    reason: str | None = None
    replay_id: str | None = None
    # Where the decided record sits, "topic:partition:offset" (live and replayed decisions; the forwarders
    # read an HL7 message's bytes there).
    source_offset: str | None = None
    schema: int = SCHEMA_VERSION
    # For the forwarders (set by the worker when it publishes): the ordering key, a keyed hash of the
    # patient identifier (HL7) or the Study Instance UID (DICOM), which is also the record's Kafka key, so
    # one patient's or study's decisions stay in order on one partition; for an image, the dataset's blob
    # reference (a digest). No PHI: the HL7 bytes stay on hl7.inbound, at source_offset.
    order_key: str | None = None
    blob: str | None = None
    # Set by ``medroute redrive`` on a dead-lettered decision sent again to one destination (the letter's
    # "partition-offset" on forward.deadletter): the delivered-ids ledger tells it apart from the first try.
    redrive_id: str | None = None

    @property
    def delivery_id(self) -> str:
        """What the forwarders' ledger knows this delivery by: the message id, or the id of its redrive."""
        return f"{self.message_id}~{self.redrive_id}" if self.redrive_id else self.message_id


@dataclass(frozen=True)
class AuditEvent(_JsonRecord):
    """Who/what/when for one step, without PHI: identifiers appear only as keyed hashes."""

    action: str  # receive | reject | classify | route | forward | view | override | promote
    actor: str  # component that acted, e.g. "listener.mllp", "worker"
    message_id: str | None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=utc_now)
    event_id: str = field(default_factory=new_id)
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True)
class DeadLetter(_JsonRecord):
    """An item that could not be taken, kept with its raw bytes and the reason."""

    source: str  # "mllp" | "dicom" | "worker"
    reason: str  # machine-readable reason code, e.g. "no_msh", "unknown_charset"
    detail: str  # human-readable explanation (no PHI)
    raw: bytes
    peer: str
    received_at: str = field(default_factory=utc_now)
    message_id: str = field(default_factory=new_id)
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True)
class DicomRecord(_JsonRecord):
    """A DICOM instance received over C-STORE: its metadata, and a claim check on the encrypted blob store.

    The dataset itself stays out of Kafka (images run to hundreds of MB); ``blob`` names it in the
    store (``sha256:<hex>`` of the exact bytes received, which ``medroute.blobstore`` verifies on read).
    """

    message_id: str  # one per receipt; a resent instance gets a new one
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    body_part: str
    view_position: str
    study_description: str
    series_description: str
    transfer_syntax: str
    size: int  # bytes of the stored dataset
    blob: str  # blob store reference, "sha256:<hex>"
    calling_ae: str
    called_ae: str
    peer: str
    received_at: str = field(default_factory=utc_now)
    schema: int = SCHEMA_VERSION
    kind: str = "dicom"


@dataclass(frozen=True)
class ForwardDeadLetter(_JsonRecord):
    """A decision one destination gave up on (``forward.deadletter``): the decision itself (with the item
    or its blob reference, so that ``medroute redrive`` can send it again) and the last error."""

    destination: str
    message_id: str
    kind: str
    reason: str  # "refused" (the receiver refused it: AE/CE, a DICOM failure, HTTP 4xx) | "attempts_exhausted"
    detail: str  # the last error, as the receiver or the connection gave it
    attempts: int
    decision: dict[str, Any]
    at: str = field(default_factory=utc_now)
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True)
class ModelPromotion(_JsonRecord):
    """A command on the control topic: workers switch the model of ``task`` to ``model`` (keyed by task)."""

    task: str  # "text_classification" | "image_classification"
    model: str  # "name@version"
    by: str  # who promoted (operator name or account)
    backfill_replay_id: str | None = None
    at: str = field(default_factory=utc_now)
    command_id: str = field(default_factory=new_id)
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Feedback(_JsonRecord):
    """A reviewer's answer to a decision routed to review: the label accepted or corrected (keyed by message id).

    ``text`` is the text the model read (HL7 reports), so that ``medroute finetune --feedback`` can learn
    from the correction: PHI, as the inbound topics hold it; never logged, never in audit events.
    """

    message_id: str
    kind: str  # "hl7" | "dicom"
    model: str | None  # "name@version" that decided
    predicted: str | None  # the label the model gave
    label: str  # the label the reviewer confirmed or set
    accepted: bool  # True: the reviewer agreed with the model
    by: str  # the reviewer's account
    text: str | None = None
    at: str = field(default_factory=utc_now)
    feedback_id: str = field(default_factory=new_id)
    schema: int = SCHEMA_VERSION
