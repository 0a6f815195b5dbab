"""Client-side TLS for the network destinations (MLLP, DICOM, HTTP) from a destination's ``tls`` section."""

from __future__ import annotations

import ssl

from pipeline.forward.destinations import Tls
from pipeline.forward.errors import UnreachableError


def client_context(tls: Tls | None) -> ssl.SSLContext | None:
    """None without a ``tls`` section; else a context that verifies the receiver (against ``ca`` when given,
    the system's CAs otherwise) and presents ``cert``/``key`` when given (mutual TLS)."""
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert and tls.key:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def connect_error(exc: OSError) -> UnreachableError:
    """A connection that failed before anything was handed over, by its cause: ``tls_verify_failed`` (the
    receiver's certificate does not verify against ``ca``, or does not name ``server_hostname``/the host),
    ``tls_failed`` (any other failed handshake, e.g. the receiver refused the client certificate) or
    ``connect_failed``. All leave the item pending, like a receiver that is down: nothing is ever sent
    without TLS instead, and the operator sees the cause in the audit trail and ``forward status``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = "tls_verify_failed"
    elif isinstance(exc, ssl.SSLError):
        code = "tls_failed"
    else:
        code = "connect_failed"
    return UnreachableError(code, f"{type(exc).__name__}: {exc}")
