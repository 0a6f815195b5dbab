"""Text out of documents: PDF text layers, RTF, HTML, and text files of unknown encoding.

One place for the HL7 worker (documents embedded in ``OBX-5`` as ``ED``), batch runs and the web API.
Errors are :class:`DocumentError` whose messages never quote the document's content.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from html.parser import HTMLParser

MAX_PDF_PAGES = 200  # a report is a few pages; a 10,000-page upload must not hold a worker for minutes
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
PDF_MAGIC = b"%PDF-"
RTF_MAGIC = b"{\\rtf"


class DocumentError(Exception):
    """The document cannot be read; the message says why without quoting content."""


def decode_text(data: bytes) -> str:
    """Bytes of a text file as text: UTF-8 (BOM or not), UTF-16 with a BOM, or GB 18030; raises
    :class:`DocumentError` for binary data."""
    # GB 18030 last: it reads most byte strings without error, so the control-character check decides.
    candidates = ["utf-16"] if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else ["utf-8-sig", "gb18030"]
    for codec in candidates:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if len(_CONTROL.findall(text)) <= 0.01 * max(1, len(text)):
            return text
    raise DocumentError("binary content, not text (neither UTF-8, UTF-16 nor GB 18030 text)")


def pdf_pages(data: bytes) -> list[str]:
    """The text layer of each page (up to :data:`MAX_PDF_PAGES`); "" for a page without one (a scan)."""
    from pypdf import PdfReader  # imported where used: only PDFs pay for it
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings can quote object contents
    if not data.startswith(PDF_MAGIC):
        raise DocumentError("not a PDF (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError("encrypted PDF")
        return [page.extract_text() or "" for page in reader.pages[:MAX_PDF_PAGES]]
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError, RecursionError) as exc:
        raise DocumentError(f"unreadable PDF ({type(exc).__name__})") from None


# -- RTF ---------------------------------------------------------------------------------------------

_RTF_TOKEN = re.compile(rb"\\([a-zA-Z]+)(-?\d+)? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}\r\n]+)|[\r\n]+", re.S)
# Groups whose content is not document text (font and colour tables, metadata, pictures...).
_RTF_SKIPPED = frozenset(
    b"fonttbl colortbl stylesheet info pict object header footer headerl headerr footerl footerr "
    b"listtable listoverridetable rsidtbl generator xmlnstbl themedata colorschememapping latentstyles "
    b"datastore fldinst".split()
)
_RTF_BREAKS = {b"par": "\n", b"line": "\n", b"sect": "\n", b"page": "\n", b"row": "\n", b"tab": "\t", b"cell": "\t"}


def rtf_text(data: bytes) -> str:
    """The text of an RTF document: paragraphs as lines, ``\\'hh`` in the document's code page
    (``\\ansicpg``, Windows-1252 by default), ``\\uN`` as Unicode; tables, metadata and pictures dropped."""
    if not data.lstrip().startswith(RTF_MAGIC):
        raise DocumentError("not an RTF document (no {\\rtf header)")
    out: list[str] = []
    pending = bytearray()  # \'hh bytes, decoded together: a double-byte code page needs pairs
    codepage = "cp1252"
    skip_after_unicode = 1  # \ucN: characters that stand in for each \u character
    to_skip = 0
    stack: list[tuple[bool, int]] = []  # (skipping, \uc) of the enclosing groups
    skipping = False
    starred = False  # "{\*\dest ...}": an optional destination this reader does not know

    def flush() -> None:
        if pending:
            if not skipping:
                out.append(pending.decode(codepage, errors="replace"))
            pending.clear()

    for match in _RTF_TOKEN.finditer(data):
        word, argument, hex_byte, symbol, brace, literal = match.groups()
        if hex_byte is not None:
            if to_skip:
                to_skip -= 1
            else:
                pending.append(int(hex_byte, 16))
            continue
        flush()
        if brace == b"{":
            stack.append((skipping, skip_after_unicode))
            starred = False
        elif brace == b"}":
            skipping, skip_after_unicode = stack.pop() if stack else (skipping, skip_after_unicode)
        elif word is not None:
            if word in _RTF_SKIPPED or starred:
                skipping = True
            elif word == b"ansicpg" and argument:
                codepage = _codepage(argument.decode())
            elif word == b"uc" and argument:
                skip_after_unicode = int(argument)
            elif word == b"u" and argument:
                if not skipping:
                    out.append(chr(int(argument) % 65536))
                to_skip = skip_after_unicode
            elif word in _RTF_BREAKS and not skipping:
                out.append(_RTF_BREAKS[word])
            starred = False
        elif symbol is not None:
            if symbol == b"*":
                starred = True
            elif symbol in (b"\\", b"{", b"}") and not skipping:
                out.append(symbol.decode())
            elif symbol == b"~" and not skipping:
                out.append(" ")
        elif literal is not None and not skipping:
            text = literal.decode(codepage, errors="replace")
            if to_skip:
                text, to_skip = text[to_skip:], max(0, to_skip - len(text))
            out.append(text)
    flush()
    return re.sub(r"[ \t]*\n[ \t]*", "\n", "".join(out)).strip()


def _codepage(number: str) -> str:
    name = f"cp{number}"
    try:
        codecs.lookup(name)
    except LookupError:
        return "cp1252"
    return name


# -- HTML --------------------------------------------------------------------------------------------


class _TextOfHtml(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The visible text of an HTML (or XHTML, or simple XML) document, one block per line."""
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
