"""How a delivery attempt can fail; the forwarder's retry and breaker logic depends only on the class.

* :class:`UnreachableError`: nothing was handed over (connection refused, DNS, association rejected). Feeds the
  breaker but uses none of the item's attempts: a receiver that is down holds its queue, it does not
  turn it into dead letters.
* :class:`SourceUnavailableError`: the item itself could not be read from medroute's own storage (Kafka for an
  HL7 record, the blob store for a DICOM file) while it is down. Nothing reached the receiver: uses none of the
  item's attempts and says nothing about the receiver (no breaker); the item waits, with backoff, for its storage.
* :class:`RetryableError`: the receiver took part and may take the item later (AR/CR, no answer, DICOM 0xA7xx,
  HTTP 5xx/408/429). Uses one attempt.
* :class:`PermanentError`: the receiver refused this item (AE/CE, a DICOM failure status, HTTP 4xx), or the item
  cannot go to this kind of destination. Dead-lettered at once.

``detail`` is for the dead letter and logs of the operator; audit events carry only ``code``.
"""

from __future__ import annotations


class DeliveryError(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code  # short, no PHI: "AE", "status_0xA700", "http_503", "connection_refused"
        self.detail = detail


class UnreachableError(DeliveryError):
    pass


class SourceUnavailableError(DeliveryError):
    pass


class RetryableError(DeliveryError):
    pass


class PermanentError(DeliveryError):
    pass
