"""The review queue: what a reviewer sees of an item routed to review, and what their answer writes.

Opening an item reads its inbound record back from Kafka and shows what the model saw: an HL7 report's
clinical text (the worker's own extraction) or a DICOM image's representative frame (decoded as the
worker does, from the blob store). The answer, accepted or corrected, goes to the ``feedback`` topic
(with the text, for ``medroute finetune --feedback``) and an ``accept`` or ``override`` audit event names
the reviewer; opening an item is a ``view`` event. Audit events carry ids and labels, never content.
"""

from __future__ import annotations

import asyncio
import base64
import io
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from medroute.config import FEEDBACK
from medroute.records import AuditEvent, DicomRecord, Feedback, Hl7Record
from medroute.sealing import BlobError
from pipeline.dicom_feed import BlobSource
from pipeline.extract import extract_text
from pipeline.pixels import ImageDecodeError, read_dataset, representative_image
from web import metrics
from web.live import Live
from web.outbox import Outbox
from web.users import Account

ACTOR = "web"
PREVIEW_SIDE = 512


@dataclass(frozen=True)
class Item:
    decision: dict[str, Any]
    kind: str  # "hl7" | "dicom" | "" (the record is no longer among the recent ones)
    text: str | None = None  # the report text the model read
    image_png: str | None = None  # base64 PNG of the frame the model saw
    problem: str | None = None  # why the content cannot be shown


def _preview(pixels: np.ndarray) -> str:
    picture = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def content_of(record: Hl7Record | DicomRecord, blobs: BlobSource) -> tuple[str | None, str | None, str | None]:
    """(text, preview PNG, problem) of one record; runs in a worker thread (decoding is slow)."""
    if isinstance(record, Hl7Record):
        try:
            return extract_text(record).text, None, None
        except (UnicodeDecodeError, LookupError):
            return None, None, "the stored bytes do not decode"
    try:
        image = representative_image(read_dataset(blobs.get(record.blob)))
    except BlobError as exc:
        return None, None, f"image not available: {exc}"
    except ImageDecodeError as exc:
        return None, None, f"image not decodable: {exc}"
    return None, _preview(image.pixels), None


class Review:
    def __init__(self, live: Live, outbox: Outbox, blobs: BlobSource, executor: Executor) -> None:
        self.live = live
        self.outbox = outbox
        self.blobs = blobs
        self.executor = executor

    async def open(self, message_id: str, account: Account) -> Item | None:
        """The item of a decision (None: no such decision among the recent); audited as a ``view``."""
        decision = self.live.latest.get(message_id)
        if decision is None:
            return None
        await self.outbox.audit(
            AuditEvent(action="view", actor=ACTOR, message_id=message_id, details={"user": account.name})
        )
        record = await self.live.fetch_record(message_id)
        if record is None:
            return Item(decision, "", problem="the item is no longer among the recent inbound records")
        loop = asyncio.get_running_loop()
        text, image, problem = await loop.run_in_executor(self.executor, content_of, record, self.blobs)
        return Item(decision, record.kind, text, image, problem)

    async def answer(self, message_id: str, label: str, account: Account) -> Feedback:
        """Store the reviewer's label on ``feedback`` (with the report's text, read again from the stored
        message) and audit it; raises KafkaUnavailableError when Kafka cannot take it."""
        decision = self.live.latest[message_id]
        text = None
        record = await self.live.fetch_record(message_id)
        if isinstance(record, Hl7Record):
            loop = asyncio.get_running_loop()
            text, _, _ = await loop.run_in_executor(self.executor, content_of, record, self.blobs)
            text = text or None
        predicted = decision.get("label")
        feedback = Feedback(
            message_id=message_id,
            kind=str(decision.get("kind", "")),
            model=decision.get("model"),
            predicted=predicted,
            label=label,
            accepted=label == predicted,
            by=account.name,
            text=text,
        )
        await self.outbox.send(FEEDBACK, message_id.encode(), feedback.to_json())
        details = {"user": account.name, "model": feedback.model, "predicted": predicted, "label": label}
        action = "accept" if feedback.accepted else "override"
        await self.outbox.audit(AuditEvent(action=action, actor=ACTOR, message_id=message_id, details=details))
        self.live.answered(feedback)
        metrics.FEEDBACK.labels(accepted=str(feedback.accepted).lower()).inc()
        return feedback
