"""One sender per destination type."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from pipeline.forward.destinations import Destination
from pipeline.forward.forwarder import Sender


def make_sender(destination: Destination, producer: AIOKafkaProducer) -> Sender:
    # Each type's module is imported only where it is used (pynetdicom is heavy).
    if destination.type == "mllp":
        from pipeline.forward.mllp import MllpSender

        return MllpSender(destination)
    if destination.type == "dicom":
        from pipeline.forward.dicom import DicomSender

        return DicomSender(destination)
    if destination.type == "http":
        from pipeline.forward.http import HttpSender

        return HttpSender(destination)
    if destination.type == "folder":
        from pipeline.forward.folder import FolderSender

        return FolderSender(destination)
    from pipeline.forward.kafka_topic import KafkaTopicSender

    return KafkaTopicSender(destination, producer)
