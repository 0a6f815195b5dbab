"""HL7 v2 escape sequences (chapter 2.7): text escaped for a message, and escaped text turned back.

:func:`escape` makes free text safe to put in a field: the delimiters become ``\\F\\ \\S\\ ...`` and
line breaks become ``\\.br\\`` (or spaces, where a single line is wanted).

:func:`unescape` turns a field's wire text back into the text it stands for.

Delimiters (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\P\\`` for the v2.7 truncation character) become the
character; ``\\Xhh..\\`` hex data is decoded with the message's character set; formatted-text commands
become line breaks and spaces (``\\.br\\``, ``\\.sp n\\``, ``\\.ce\\`` → newlines, ``\\.sk n\\`` → spaces)
or nothing (``\\.fi\\ \\.nf\\ \\.in\\ \\.ti\\``); highlighting (``\\H\\ \\N\\``), character-set switches
(``\\C..\\ \\M..\\``) and local escapes (``\\Z..\\``) are dropped. Anything else is kept as written.
"""

from __future__ import annotations

import re

from formats.hl7.delimiters import Delimiters

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_MAX_REPEAT = 20  # a ".sp 1000" must not turn one line into a page of blanks


def escape(value: str, delimiters: Delimiters, line_breaks: bool = False) -> str:
    """``value`` with HL7 escape sequences for every delimiter it contains, so that it cannot break the
    message's structure. Line breaks become ``\\.br\\`` with ``line_breaks``, else spaces."""
    esc = delimiters.escape or "\\"
    value = value.replace(esc, f"{esc}E{esc}")
    for char, code in (
        (delimiters.field, "F"),
        (delimiters.component, "S"),
        (delimiters.repetition, "R"),
        (delimiters.subcomponent, "T"),
        (delimiters.truncation, "P"),
    ):
        if char:
            value = value.replace(char, f"{esc}{code}{esc}")
    line_break = f"{esc}.br{esc}" if line_breaks else " "
    return value.replace("\r\n", line_break).replace("\r", line_break).replace("\n", line_break)


def unescape(value: str, delimiters: Delimiters, encoding: str = "ascii") -> str:
    """``value`` with its escape sequences replaced; ``encoding`` decodes ``\\X..\\`` hex data."""
    esc = delimiters.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    pos = 0
    while True:
        start = value.find(esc, pos)
        end = value.find(esc, start + 1) if start != -1 else -1
        if end == -1:
            out.append(value[pos:])
            return "".join(out)
        replacement = _sequence(value[start + 1 : end], delimiters, encoding)
        if replacement is None:  # not an escape sequence: keep the character, look again after it
            out.append(value[pos : start + 1])
            pos = start + 1
        else:
            out.append(value[pos:start])
            out.append(replacement)
            pos = end + 1


def _sequence(body: str, d: Delimiters, encoding: str) -> str | None:
    if not body:
        return None
    simple = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "P": d.truncation or None,  # no truncation character declared: not an escape sequence
        "H": "",
        "N": "",
    }
    if body in simple:
        return simple[body]
    head, rest = body[0], body[1:]
    if head == "X" and _HEX.fullmatch(rest):
        return bytes.fromhex(rest).decode(encoding, errors="replace")
    if (head in "CM" and _HEX.fullmatch(rest)) or head == "Z":
        return ""
    if head == ".":
        return _format_command(rest[:2].lower(), rest[2:].strip())
    return None


def _format_command(command: str, argument: str) -> str | None:
    count = _count(argument)
    if command in ("br", "ce"):
        return "\n"
    if command == "sp":
        return "\n" * (count or 1)
    if command == "sk":
        return " " * (count or 1)
    if command in ("fi", "nf", "in", "ti"):
        return ""
    return None


def _count(argument: str) -> int:
    digits = argument.lstrip("+-")
    return min(int(digits), _MAX_REPEAT) if digits.isdigit() else 0
