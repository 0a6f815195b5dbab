"""Character set of an HL7 v2 message from MSH-18 (HL7 table 0211), read from the raw bytes.

MSH-18 has to be found before the message can be decoded, so it is read from the bytes with the
byte-level field separator: every table 0211 character set is ASCII-compatible up to MSH-18 in
practice. The raw bytes are never changed; only the decoded text is handed on.

Choices where the table leaves room (documented for integration engineers):

* Empty MSH-18 uses the site default (``MEDROUTE_MLLP_DEFAULT_CHARSET``, HL7's default ``ASCII``). Real
  senders often leave MSH-18 empty and send UTF-8 or ISO 8859-1 bytes anyway (``µmol/L``, ``Müller``);
  refusing them stalls feeds that stop on a negative ACK while protecting nothing (the raw bytes are
  kept). So unless a caller asks for strictness (``fallback=None``), bytes the default cannot decode
  are read as UTF-8 when they are valid UTF-8, else with the fallback (ISO 8859-1 decodes any byte),
  and :attr:`Decoded.assumed` names the codec that was assumed.
* ``UNICODE`` (deprecated, ambiguous) is read as UTF-8: the only Unicode form that survives MLLP's
  byte framing. ``UNICODE UTF-16``/``UTF-32`` are refused for the same reason.
* A UTF-8 byte order mark is accepted when MSH-18 is empty, ASCII or a UTF-8 value.
* Japanese: ``ISO IR87`` (JIS X 0208 kanji), alone or as an alternate set after an ASCII default
  (``~ISO IR87``), means ISO-2022-JP with escape sequences, as JAHIS profiles send it; with ``ISO IR13``
  as a further alternate it is ISO-2022-JP-EXT (half-width katakana), with ``ISO IR159`` (JIS X 0212)
  ISO-2022-JP-2. ``ISO IR13`` alone (8-bit JIS X 0201 katakana) is read as Shift-JIS, its superset,
  which is what such senders use for kanji too.
* ``8859/12`` does not exist; ``CNS 11643-1992`` has no codec here and is refused.
* A few non-table spellings seen in the wild (``UTF-8``, ``SHIFT_JIS``, ``GB18030``...) are accepted.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from formats.hl7.errors import UNDECODABLE, UNKNOWN_CHARSET, MessageError

UTF8_BOM = codecs.BOM_UTF8

# Keys are MSH-18 values upper-cased with spaces, '_' and '-' removed ("GB 18030-2000" -> "GB180302000").
_TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "ISOIR6": "ascii",
    "ISOIR100": "iso8859-1",
    "ISOIR192": "utf-8",
    "UNICODE": "utf-8",
    "UNICODEUTF8": "utf-8",
    "GB180302000": "gb18030",
    "KSX1001": "euc_kr",
    "BIG5": "big5",
    "ISOIR87": "iso2022_jp",
    "ISOIR14": "iso2022_jp",  # JIS X 0201 roman: ASCII apart from two glyphs
    "ISOIR159": "iso2022_jp_2",
    "ISOIR13": "shift_jis",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 17) if n != 12},
}
_ALIASES: dict[str, str] = {
    "UTF8": "utf-8",
    "GB18030": "gb18030",
    "SHIFTJIS": "shift_jis",
    "SJIS": "shift_jis",
    "CP932": "cp932",
    "WINDOWS31J": "cp932",
    **{f"ISO8859{n}": f"iso8859-{n}" for n in range(1, 17) if n != 12},
}
_REFUSED: dict[str, str] = {
    "UNICODEUTF16": "UTF-16 is not ASCII-compatible and cannot travel in MLLP byte framing",
    "UNICODEUTF32": "UTF-32 is not ASCII-compatible and cannot travel in MLLP byte framing",
    "CNS116431992": "no CNS 11643 codec is available",
}
# Alternate (escape-switched) Japanese sets that may follow an ASCII default in MSH-18.
_JAPANESE_ALTERNATES = {"ISOIR87", "ISOIR13", "ISOIR14", "ISOIR159"}
_ASCII_DEFAULTS = {"", "ASCII", "ISOIR6", "ISOIR14"}
_UTF8_CODECS = {"utf-8"}
_SEPARATORS = re.compile(r"[\s_\-]+")


@dataclass(frozen=True)
class Decoded:
    text: str
    charset: str  # MSH-18 as sent, "" when absent
    codec: str  # the Python codec that decodes the raw bytes (Hl7Record.encoding)
    assumed: str | None = None  # the codec guessed for bytes that MSH-18 (empty) and the default did not cover


def read_charset_field(raw: bytes) -> tuple[str, str]:
    """MSH-18 as sent and the repetition separator, read from raw bytes ("" when absent/unreadable)."""
    data = raw[len(UTF8_BOM) :] if raw.startswith(UTF8_BOM) else raw
    if not data.startswith(b"MSH") or len(data) < 8:
        return "", "~"
    field_sep = data[3:4]
    end = len(data)
    for terminator in (b"\r", b"\n"):
        found = data.find(terminator)
        if 0 <= found < end:
            end = found
    fields = data[:end].split(field_sep)
    repetition = fields[1][1:2].decode("latin-1") if len(fields) > 1 and len(fields[1]) > 1 else "~"
    if len(fields) <= 17:
        return "", repetition
    return fields[17].decode("latin-1").strip(), repetition


_CHARSET_NAME = re.compile(r"[A-Za-z0-9 /_.~-]{1,30}\Z")


def _shown(value: str) -> str:
    """MSH-18 as it may appear in a detail: only when it looks like a character set name (a shifted
    field could put content there, and details must carry no PHI)."""
    return repr(value) if _CHARSET_NAME.match(value) else "(unreadable value)"


def _key(value: str) -> str:
    return _SEPARATORS.sub("", value.strip().upper())


def _single_codec(value: str) -> str:
    key = _key(value)
    if key in _REFUSED:
        raise MessageError(UNKNOWN_CHARSET, f"MSH-18 character set {_shown(value)}: {_REFUSED[key]}", "MSH^1^18")
    codec = _TABLE_0211.get(key) or _ALIASES.get(key)
    if codec is None:
        raise MessageError(UNKNOWN_CHARSET, f"MSH-18 character set {_shown(value)} is not supported", "MSH^1^18")
    return codec


def codec_for(charset: str, repetition: str = "~", default: str = "ASCII") -> str:
    """The Python codec for an MSH-18 value (possibly repeated); ``default`` applies when it is empty."""
    values = charset.split(repetition) if repetition else [charset]
    first, alternates = values[0], [v for v in values[1:] if v.strip()]
    if not alternates:
        return _single_codec(first if first.strip() else default)
    keys = {_key(v) for v in alternates}
    if _key(first) not in _ASCII_DEFAULTS or not keys <= _JAPANESE_ALTERNATES:
        detail = f"MSH-18 combination {_shown(charset)} is not supported"
        raise MessageError(UNKNOWN_CHARSET, detail, "MSH^1^18")
    if "ISOIR159" in keys:
        return "iso2022_jp_2"
    if "ISOIR13" in keys:
        return "iso2022_jp_ext"
    return "iso2022_jp"


# What tolerant reading assumes for an empty MSH-18 when the site default does not fit (ISO 8859-1).
DEFAULT_FALLBACK = "8859/1"


def decode(raw: bytes, default: str = "ASCII", fallback: str | None = DEFAULT_FALLBACK) -> Decoded:
    """Decode a message by its MSH-18; raises :class:`MessageError` for unknown sets or bad bytes.

    With MSH-18 empty and bytes the default cannot decode, ``fallback`` None refuses them (strict);
    otherwise they are read as UTF-8 if valid, else with ``fallback`` (see the module's notes).
    """
    charset, repetition = read_charset_field(raw)
    # A UTF-8 BOM declares UTF-8: bytes that contradict it are refused, not guessed at.
    if fallback is not None and not charset and not raw.startswith(UTF8_BOM):
        try:
            return _decode_declared(raw, charset, repetition, default)
        except MessageError as exc:
            if exc.reason is not UNDECODABLE:
                raise
            return _decode_assumed(raw, fallback)
    return _decode_declared(raw, charset, repetition, default)


def _decode_assumed(raw: bytes, fallback: str) -> Decoded:
    """An empty-MSH-18 message the default could not read: UTF-8 if valid, else ``fallback``."""
    for codec in ("utf-8", codecs.lookup(codec_for(fallback)).name):
        try:
            return Decoded(raw.decode(codec), "", codec, assumed=codec)
        except UnicodeDecodeError:
            continue
    detail = f"bytes are neither UTF-8 nor the fallback character set {_shown(fallback)}"
    raise MessageError(UNDECODABLE, detail)


def _decode_declared(raw: bytes, charset: str, repetition: str, default: str) -> Decoded:
    """Decode by MSH-18, or by ``default`` when it is empty; refuses bytes that do not fit."""
    codec = codecs.lookup(codec_for(charset, repetition, default)).name
    body = raw
    if raw.startswith(UTF8_BOM):
        if codec not in _UTF8_CODECS and _key(charset) not in _ASCII_DEFAULTS:
            detail = f"UTF-8 byte order mark but MSH-18 declares {_shown(charset)}"
            raise MessageError(UNDECODABLE, detail, "MSH^1^18")
        codec, body = "utf-8-sig", raw[len(UTF8_BOM) :]
    try:
        text = body.decode("utf-8" if codec == "utf-8-sig" else codec)
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(raw) - len(body))
        declared = _shown(charset) if charset else f"{default!r} (default)"
        detail = f"byte {offset} is not valid in the declared character set {declared} ({codec})"
        raise MessageError(UNDECODABLE, detail) from None
    return Decoded(text, charset, codec)


def encode(text: str, codec: str) -> bytes:
    """Encode an outgoing message (an ACK) in the incoming message's codec."""
    return text.encode("utf-8" if codec == "utf-8-sig" else codec, errors="replace")
