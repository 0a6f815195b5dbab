"""Documents carried inside an HL7 v2 field as encapsulated data (data type ``ED``, usually ``OBX-5``).

``ED`` has five components: source application ^ type of data ^ data subtype ^ encoding ^ data. Senders
fill the type in two styles: HL7's tables (``AP^PDF``, ``TEXT^RTF``) and MIME (``application^pdf``,
``text^plain``); the encoding is ``Base64``, ``Hex`` or ``A`` (none: the data is escaped text). What the
decoded bytes are is told by their content first (``%PDF-``, ``{\\rtf``), then by the declared subtype.

:func:`document_text` returns the text of a PDF (text layer), RTF, HTML/XML or plain-text document, None
for a kind that holds no text (an image), and raises :class:`~formats.documents.DocumentError` for bad
base64 or hex and for a document that cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import re

from formats.documents import PDF_MAGIC, RTF_MAGIC, DocumentError, decode_text, html_text, pdf_pages, rtf_text
from formats.hl7.delimiters import Delimiters
from formats.hl7.escapes import unescape

_WHITESPACE = re.compile(r"\s+")
_TEXT_SUBTYPES = frozenset({"PLAIN", "TEXT", "TXT", "X-HL7-TEXT"})
_MARKUP_SUBTYPES = frozenset({"HTML", "XHTML", "XML", "SGML", "HTML+XML", "X-HL7-CDA-LEVEL-ONE"})
_NO_TEXT_TYPES = frozenset({"IM", "IMAGE", "AU", "AUDIO", "VIDEO", "SI", "NS"})


def _declared(type_of_data: str, subtype: str) -> tuple[str, str]:
    """(type, subtype) upper-cased; a MIME "type/subtype" in either component is split."""
    type_of_data, subtype = type_of_data.strip().upper(), subtype.strip().upper()
    if "/" in subtype:
        type_of_data, subtype = subtype.split("/", 1)
    elif "/" in type_of_data:
        type_of_data, subtype = type_of_data.split("/", 1)
    return type_of_data, subtype


def _payload(data: str, encoding: str, delimiters: Delimiters, charset: str) -> bytes:
    encoding = encoding.strip().upper()
    if encoding in ("BASE64", "B64"):
        # Long payloads come wrapped: escaped line breaks (\.br\, \X0D0A\) and blank space are dropped.
        packed = _WHITESPACE.sub("", unescape(data, delimiters, charset))
        try:
            return base64.b64decode(packed + "=" * (-len(packed) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise DocumentError("ED data is not valid base64") from None
    if encoding == "HEX":
        try:
            return bytes.fromhex(_WHITESPACE.sub("", data))
        except ValueError:
            raise DocumentError("ED data is not valid hex") from None
    if encoding in ("A", ""):
        return unescape(data, delimiters, charset).encode("utf-8")
    raise DocumentError(f"ED encoding {encoding[:12]!r} is not Base64, Hex or A")


def document_text(value: str, delimiters: Delimiters, charset: str = "ascii") -> tuple[str, str] | None:
    """(text, kind) of the document in one ``ED`` field repetition; kind is ``pdf``, ``rtf``, ``html``
    or ``text``. None for a document that holds no text (an image, audio)."""
    parts = value.split(delimiters.component)
    parts += [""] * (5 - len(parts))
    type_of_data, subtype = _declared(parts[1], parts[2])
    # The data is the fifth component; a component separator inside it (not valid, but seen) is kept.
    data = delimiters.component.join(parts[4:])
    if not data.strip():
        raise DocumentError("ED field without data")
    payload = _payload(data, parts[3], delimiters, charset)
    head = payload[:1024].lstrip()
    if head.startswith(PDF_MAGIC) or subtype == "PDF":
        return "\n".join(pdf_pages(payload)), "pdf"
    if head.startswith(RTF_MAGIC) or subtype == "RTF":
        return rtf_text(payload), "rtf"
    if type_of_data in _NO_TEXT_TYPES:
        return None
    if subtype in _MARKUP_SUBTYPES or head[:1] == b"<":
        return html_text(decode_text(payload)), "html"
    if subtype in _TEXT_SUBTYPES or type_of_data == "TEXT" or not subtype:
        return decode_text(payload), "text"
    return None
