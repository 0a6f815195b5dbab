"""The ``http`` destination: POST (or PUT) to a URL, e.g. a FHIR endpoint or an intake service.

``body: raw`` sends the item (HL7 as ``x-application/hl7-v2+er7``, DICOM as ``application/dicom``);
``body: decision`` sends the decision as JSON (without the item's bytes). 2xx is delivered; 408, 429 and 5xx
are retried; any other status is the receiver's refusal. TLS verifies the server (``tls.ca``) and presents
a client certificate when ``tls.cert``/``tls.key`` are given (mTLS). Runs ``http.client`` in a thread.
"""

from __future__ import annotations

import asyncio
import http.client
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from pipeline.forward.destinations import Destination, resolve_header
from pipeline.forward.errors import PermanentError, RetryableError
from pipeline.forward.items import Item
from pipeline.forward.tls import client_context, connect_error

CONTENT_TYPES = {"hl7": "x-application/hl7-v2+er7", "dicom": "application/dicom"}
RETRY_STATUSES = (408, 429)


class HttpSender:
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        url = urlsplit(destination.option("url"))
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname or "", url.port
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._method = destination.option("method", "POST").upper()
        self._headers = {name: resolve_header(value) for name, value in (destination.option("headers") or {}).items()}
        self._body = destination.option("body", "raw")
        self._tls = client_context(destination.tls) if self._https else None
        self._server_hostname = destination.tls.server_hostname if destination.tls else None
        self._executor = ThreadPoolExecutor(destination.concurrency, thread_name_prefix=f"http-{destination.name}")

    async def send(self, item: Item) -> str:
        if self._body == "decision":
            body, content_type = item.decision_body(), "application/json"
        else:
            body, content_type = item.content, CONTENT_TYPES[item.kind]
        headers = {"Content-Type": content_type, "X-Medroute-Message-Id": item.message_id, **self._headers}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._post, body, headers)

    def _post(self, body: bytes, headers: dict[str, str]) -> str:
        timeout = self.destination.timeout
        if self._https:
            connection: http.client.HTTPConnection = _HttpsConnection(
                self._host, self._port, timeout=timeout, context=self._tls, server_hostname=self._server_hostname
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            try:
                connection.connect()
            except OSError as exc:  # a failed TLS handshake among them
                raise connect_error(exc) from None
            try:
                connection.request(self._method, self._path, body=body, headers=headers)
                response = connection.getresponse()
                text = response.read(2000).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as exc:
                raise RetryableError("no_answer", f"{type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        code = f"http_{response.status}"
        if 200 <= response.status < 300:
            return code
        if response.status in RETRY_STATUSES or response.status >= 500:
            raise RetryableError(code, text)
        raise PermanentError(code, text)

    async def close(self) -> None:
        self._executor.shutdown(wait=False)


class _HttpsConnection(http.client.HTTPSConnection):
    """``HTTPSConnection`` that verifies ``server_hostname`` (when given) instead of the URL's host:
    ``http.client`` has no such setting and ignored ``tls.server_hostname``. No proxy tunnel here."""

    def __init__(self, host: str, port: int | None, *, server_hostname: str | None, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # the TCP connection
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname or self.host)
