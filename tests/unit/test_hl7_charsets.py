"""MSH-18 character sets: every table value we support, the fixtures, BOM, refusals."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from formats.hl7 import charsets
from formats.hl7.errors import MessageError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"


def message(msh18: str, body: str = "OBX|1|TX|||text") -> str:
    return f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C1|P|2.5.1|||||XXX|{msh18}\rPID|1||P1\r{body}\r"


@pytest.mark.parametrize(
    ("msh18", "text", "codec"),
    [
        ("", "plain ascii", "ascii"),
        ("ASCII", "plain ascii", "ascii"),
        ("ISO IR6", "plain ascii", "ascii"),
        ("UNICODE UTF-8", "naïve — 中文 — 日本語 — 🙂", "utf-8"),
        ("UNICODE", "naïve", "utf-8"),
        ("8859/1", "Müller, façade, señal", "iso8859-1"),
        ("ISO IR100", "Müller", "iso8859-1"),
        ("8859/2", "Łódź, Žluťoučký", "iso8859-2"),
        ("8859/5", "Привет", "iso8859-5"),
        ("8859/7", "Καλημέρα", "iso8859-7"),
        ("8859/9", "İstanbul ğ", "iso8859-9"),
        ("8859/15", "€ œ", "iso8859-15"),
        ("GB 18030-2000", "胸部CT平扫未见异常", "gb18030"),
        ("KS X 1001", "흉부 사진", "euc_kr"),
        ("BIG-5", "胸部檢查", "big5"),
        ("ISO IR87", "所見：異常なし", "iso2022_jp"),
        ("~ISO IR87", "所見：異常なし", "iso2022_jp"),
        ("ISO IR6~ISO IR87~ISO IR13", "ｶﾀｶﾅ 漢字", "iso2022_jp_ext"),
        ("ISO IR13", "頭部ＭＲＩ ｶﾀｶﾅ 表記", "shift_jis"),
        ("UTF-8", "alias ü", "utf-8"),
    ],
)
def test_decodes_each_charset(msh18: str, text: str, codec: str) -> None:
    raw = message(msh18, f"OBX|1|TX|||{text}").encode(codec)
    decoded = charsets.decode(raw)
    assert decoded.codec == codecs.lookup(codec).name
    assert decoded.charset == msh18
    assert text in decoded.text


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16])
def test_8859_parts(n: int) -> None:
    assert charsets.codec_for(f"8859/{n}") == f"iso8859-{n}"


def test_8859_12_does_not_exist() -> None:
    with pytest.raises(MessageError) as info:
        charsets.decode(message("8859/12").encode())
    assert info.value.reason.code == "unknown_charset"


@pytest.mark.parametrize("msh18", ["EBCDIC", "UNICODE UTF-16", "UNICODE UTF-32", "CNS 11643-1992", "8859/1~ISO IR87"])
def test_unknown_or_unsupported(msh18: str) -> None:
    with pytest.raises(MessageError) as info:
        charsets.decode(message(msh18).encode())
    assert info.value.reason.code == "unknown_charset"
    assert info.value.location == "MSH^1^18"


def test_declared_utf8_but_gb18030_bytes() -> None:
    raw = message("UNICODE UTF-8", "OBX|1|TX|||胸部CT平扫未见异常").encode("gb18030")
    with pytest.raises(MessageError) as info:
        charsets.decode(raw)
    assert info.value.reason.code == "undecodable"
    assert "UNICODE UTF-8" in info.value.detail


def test_high_bytes_without_msh18_are_refused_when_strict() -> None:
    with pytest.raises(MessageError) as info:
        charsets.decode(message("", "OBX|1|TX|||Müller").encode("latin-1"), fallback=None)
    assert info.value.reason.code == "undecodable"


# Public-style messages as real senders send them: non-ASCII bytes, MSH-18 empty.
LAB_UTF8 = message("", "OBX|1|NM|2160-0^Creatinine^LN||88|µmol/L|62-106|N").encode("utf-8")
GERMAN_LATIN1 = message("", "NTE|1||Befund: Lungenödem, Größe unverändert; à revoir").encode("latin-1")
CHINESE_GB18030 = message("", "OBX|1|TX|||胸部CT平扫未见异常").encode("gb18030")


@pytest.mark.parametrize(
    ("raw", "fallback", "codec", "needle"),
    [
        (LAB_UTF8, charsets.DEFAULT_FALLBACK, "utf-8", "µmol/L"),
        (GERMAN_LATIN1, charsets.DEFAULT_FALLBACK, "iso8859-1", "Lungenödem"),
        (CHINESE_GB18030, "GB 18030-2000", "gb18030", "胸部CT平扫未见异常"),
        # Not UTF-8 and no site fallback for Chinese: read as 8859-1 (mojibake, never a refusal).
        (CHINESE_GB18030, charsets.DEFAULT_FALLBACK, "iso8859-1", "OBX|1|TX|||"),
    ],
)
def test_tolerant_reading_without_msh18(raw: bytes, fallback: str, codec: str, needle: str) -> None:
    decoded = charsets.decode(raw, fallback=fallback)
    assert (decoded.codec, decoded.assumed, decoded.charset) == (codec, codec, "")
    assert needle in decoded.text
    assert raw.decode(decoded.codec) == decoded.text  # what Hl7Record.text() will do


def test_ascii_without_msh18_assumes_nothing() -> None:
    decoded = charsets.decode(message("").encode())
    assert (decoded.codec, decoded.assumed) == ("ascii", None)


def test_declared_charset_is_never_second_guessed() -> None:
    with pytest.raises(MessageError) as info:
        charsets.decode(message("ASCII", "OBX|1|TX|||Müller").encode("latin-1"))
    assert info.value.reason.code == "undecodable"


def test_bom_with_bytes_that_are_not_utf8_is_refused_even_when_tolerant() -> None:
    with pytest.raises(MessageError):
        charsets.decode(b"\xef\xbb\xbf" + message("", "NTE|1||Müller").encode("latin-1"))


def test_site_default_charset_applies_to_empty_msh18() -> None:
    decoded = charsets.decode(message("", "OBX|1|TX|||Müller").encode("utf-8"), default="UNICODE UTF-8")
    assert decoded.codec == "utf-8" and "Müller" in decoded.text and decoded.charset == ""


def test_utf8_bom() -> None:
    raw = b"\xef\xbb\xbf" + message("", "OBX|1|TX|||Zoë").encode("utf-8")
    decoded = charsets.decode(raw)
    assert decoded.codec == "utf-8-sig"
    assert decoded.text.startswith("MSH|") and "Zoë" in decoded.text
    assert raw.decode(decoded.codec) == decoded.text  # what Hl7Record.text() will do


def test_bom_conflicting_with_declared_charset() -> None:
    with pytest.raises(MessageError) as info:
        charsets.decode(b"\xef\xbb\xbf" + message("8859/1").encode())
    assert info.value.reason.code == "undecodable"


def test_msh18_read_from_raw_bytes_with_custom_separator() -> None:
    raw = "MSH#$%*!#A#B#C#D#20240101##ORU$R01#C1#P#2.5.1######8859/1\r".encode("latin-1")
    assert charsets.read_charset_field(raw) == ("8859/1", "%")
    assert charsets.decode(raw).codec == "iso8859-1"


def test_msh18_absent_or_not_msh() -> None:
    assert charsets.read_charset_field(b"MSH|^~\\&|A|B\r") == ("", "~")
    assert charsets.read_charset_field(b"\x00\x01binary") == ("", "~")
    assert charsets.read_charset_field(b"") == ("", "~")


def test_msh18_with_lf_segment_endings() -> None:
    raw = message("8859/1").replace("\r", "\n").encode("latin-1")
    assert charsets.read_charset_field(raw)[0] == "8859/1"


@pytest.mark.parametrize(
    ("name", "codec", "needle"),
    [
        ("gb18030_chinese.hl7", "gb18030", "胸部CT平扫未见异常"),
        ("latin1_8859_1.hl7", "iso8859-1", "MÜLLER^JÖRG"),
        ("shift_jis.hl7", "shift_jis", "脳実質に明らかな異常信号"),
        ("iso2022_jp.hl7", "iso2022_jp", "見本^太郎"),
        ("utf8_bom.hl7", "utf-8-sig", "ÉCHANTILLON^Zoë"),
    ],
)
def test_fixtures(name: str, codec: str, needle: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    decoded = charsets.decode(raw)
    assert decoded.codec == codec
    assert needle in decoded.text


def test_encode_round_trip_and_replacement() -> None:
    assert charsets.encode("MSA|AA|中文", "gb18030").decode("gb18030") == "MSA|AA|中文"
    assert charsets.encode("MSA|AA|中文", "ascii") == b"MSA|AA|??"
    assert charsets.encode("x", "utf-8-sig") == b"x"


def test_details_do_not_quote_content_like_values() -> None:
    with pytest.raises(MessageError) as info:
        charsets.decode(message("SMITH^JOHN^Q, 12 Fiction Street").encode())
    assert "SMITH" not in info.value.detail and "unreadable" in info.value.detail
