"""Promotions applied to model slots: swapped whole when the candidate loads, refused otherwise."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from medroute.records import ModelPromotion
from pipeline.control import ModelSlot, PromotionFollower, parse


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list = []

    async def publish(self, messages) -> None:
        self.sent.extend(messages)


def follower_with(slot: ModelSlot) -> tuple[PromotionFollower, RecordingPublisher]:
    publisher = RecordingPublisher()
    return PromotionFollower([slot], publisher, ThreadPoolExecutor(1)), publisher


async def test_a_loadable_promotion_is_swapped_in_and_audited() -> None:
    installed: list[str] = []
    slot = ModelSlot("text_classification", "m@1", lambda ref: f"model {ref}", installed.append)
    follower, publisher = follower_with(slot)
    assert await follower.apply(ModelPromotion(task="text_classification", model="m@2", by="ops"))
    assert installed == ["model m@2"] and slot.ref == "m@2"
    details = json.loads(publisher.sent[0].value)["details"]
    assert details == {**details, "applied": True, "previous": "m@1", "model": "m@2", "by": "ops"}
    # The same version again, or another task's promotion: nothing happens.
    assert not await follower.apply(ModelPromotion(task="text_classification", model="m@2", by="ops"))
    assert not await follower.apply(ModelPromotion(task="image_classification", model="x@1", by="ops"))
    assert len(installed) == 1 and len(publisher.sent) == 1


async def test_a_promotion_that_cannot_load_is_refused_and_the_model_kept() -> None:
    def load(ref: str) -> str:
        raise ValueError(f"rules name labels that {ref} does not have: letter")

    installed: list[str] = []
    slot = ModelSlot("text_classification", "m@1", load, installed.append)
    follower, publisher = follower_with(slot)
    assert not await follower.apply(ModelPromotion(task="text_classification", model="other@1", by="ops"))
    assert installed == [] and slot.ref == "m@1"
    details = json.loads(publisher.sent[0].value)["details"]
    assert details["applied"] is False and "does not have: letter" in details["reason"]


def test_unreadable_control_records_are_skipped() -> None:
    assert parse(b"not json") is None
    assert parse(None) is None
    promotion = ModelPromotion(task="text_classification", model="m@2", by="ops")
    assert parse(promotion.to_json()) == promotion
