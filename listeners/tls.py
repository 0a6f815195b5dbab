"""TLS for the listeners: one way to build a server context from a certificate, key and optional CA."""

from __future__ import annotations

import ssl


def server_context(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2+) when a certificate is configured, else None; with ``ca`` the
    peers must present a certificate it signed (mutual TLS)."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
