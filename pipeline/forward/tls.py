"""Client-side TLS for the network destinations (MLLP, DICOM, HTTP) from a destination's ``tls`` section."""

from __future__ import annotations

import ssl

from pipeline.forward.destinations import Tls


def client_context(tls: Tls | None) -> ssl.SSLContext | None:
    """None without a ``tls`` section; else a context that verifies the receiver (against ``ca`` when given,
    the system's CAs otherwise) and presents ``cert``/``key`` when given (mutual TLS)."""
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert and tls.key:
        context.load_cert_chain(tls.cert, tls.key)
    return context
