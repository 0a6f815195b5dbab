"""The separators an HL7 v2 message declares in MSH-1 and MSH-2 (chapter 2.5.4)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from formats.hl7.errors import BAD_DELIMITERS, MessageError

DEFAULT_ENCODING_CHARACTERS = "^~\\&"


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"  # "" when MSH-2 declares none: then nothing is an escape sequence
    subcomponent: str = "&"
    truncation: str = ""  # HL7 v2.7+ fifth encoding character

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it must be written back."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


def valid_delimiter(char: str) -> bool:
    return len(char) == 1 and not char.isalnum() and char.isprintable() and not char.isspace()


def _encoding_characters(text: str) -> str:
    """MSH-2 as written: from after MSH-1 up to the next field separator or the segment's end."""
    field = text[3]
    end = text.find(field, 4)
    encoding = text[4:] if end < 0 else text[4:end]
    return encoding.split("\r", 1)[0].split("\n", 1)[0]


def read_delimiters(text: str) -> Delimiters:
    """Delimiters of a message starting with ``MSH``; raises :class:`MessageError` for anything HL7
    does not allow (fewer than 4 or more than 5 encoding characters, letters, repeats)."""
    if len(text) < 8:
        raise MessageError(BAD_DELIMITERS, "MSH segment too short to hold MSH-1 and MSH-2", "MSH^1^2")
    encoding = _encoding_characters(text)
    chars = text[3] + encoding
    if not 4 <= len(encoding) <= 5:
        raise MessageError(BAD_DELIMITERS, f"MSH-2 has {len(encoding)} encoding characters, not 4 or 5", "MSH^1^2")
    if not all(valid_delimiter(c) for c in chars):
        raise MessageError(BAD_DELIMITERS, "delimiters must be printable and not letters or digits", "MSH^1^1")
    if len(set(chars)) != len(chars):
        raise MessageError(BAD_DELIMITERS, "MSH-1 and MSH-2 delimiters must all differ", "MSH^1^2")
    return Delimiters(text[3], *encoding)


def lenient_delimiters(text: str) -> Delimiters:
    """What MSH-1 and MSH-2 declare, HL7's defaults where MSH-2 is short; never raises.

    For messages stored without the listener's checks (files in a batch run, other producers): the
    field separator is taken as written when it is usable, else ``|``; a missing escape character
    means no escape sequences.
    """
    if not text.startswith("MSH"):
        return Delimiters()
    # Only MSH-1 and the first five characters of MSH-2 count, so a feed's few spellings are cached.
    return _lenient(text[3:9])


@lru_cache(maxsize=256)
def _lenient(head: str) -> Delimiters:
    """``lenient_delimiters`` of a message whose MSH segment starts with ``"MSH" + head``."""
    if not head or not valid_delimiter(head[0]):
        return Delimiters()
    chars = _encoding_characters("MSH" + head)
    defaults = Delimiters()
    return Delimiters(
        field=head[0],
        component=chars[0] if len(chars) > 0 else defaults.component,
        repetition=chars[1] if len(chars) > 1 else defaults.repetition,
        escape=chars[2] if len(chars) > 2 else "",
        subcomponent=chars[3] if len(chars) > 3 else defaults.subcomponent,
        truncation=chars[4] if len(chars) > 4 else "",
    )
