"""The worker's new HL7 reader extracts the same clinical text as the hl7apy-based reading it replaced.

The reference is :mod:`tests.unit.hl7apy_reference` (hl7apy's tolerant parse, its plain-splitter fallback
where hl7apy refuses a message, then OBX-5 of TX/FT/ST and NTE-3). Both readings run over every fixture
and over a seeded corpus of generated messages; each message is decoded with the codec the listener would
pick (:func:`formats.hl7.charsets.decode`). ED documents are left out: the old reader did not read them.

Where the two differ on purpose, the difference is pinned in :data:`DELIBERATE_DIFFERENCES` with both
values, and the generator does not produce it (see :func:`_field`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from formats.hl7 import charsets
from pipeline.extract import extract_text
from tests.unit.hl7apy_reference import reference_text
from tests.unit.test_pipeline_support import FIXTURES, record_from

SEED = 20261129
CORPUS_SIZE = 300

# Delimiters are drawn from here; no word of the vocabularies below (words split on spaces) contains one.
DELIMITER_POOL = "|^~\\&#$%*!@?+="
WORDS = {
    "ascii": "FINDINGS: IMPRESSION: lungs are clear no pleural effusion heart size normal mild "
    "degenerative change at L4-L5 (see prior) 3.5 cm follow-up recommended. O'Brien, signed",
    "latin": "Befund: Herz und Lunge unauffällig, kein Erguß. Röntgen Thorax Größe ½ ±2 µg été déjà Ø bien",
    "chinese": "检查所见： 双肺纹理清晰， 未见明显实质性病变。 诊断意见： 胸部CT平扫未见异常。 心脏大小正常",
}
# MSH-18 value, the codec to encode with, the vocabularies its text uses.
CHARSETS = [
    ("", "ascii", ["ascii"]),
    ("ASCII", "ascii", ["ascii"]),
    ("8859/1", "iso8859-1", ["ascii", "latin"]),
    ("UNICODE UTF-8", "utf-8", ["ascii", "latin", "chinese"]),
    ("GB 18030-2000", "gb18030", ["ascii", "chinese"]),
]
ENDINGS = {"CR": "\r", "LF": "\n", "CRLF": "\r\n"}
OBX_TYPES = ["TX", "FT", "ST", "CE", "CWE", "NM", ""]
FORMATTING = [".br", ".sp", ".sp 2", ".sk 3", ".ce", ".fi", ".nf", ".in 4", ".ti -2"]


@dataclass
class Generated:
    raw: bytes
    features: set[str] = field(default_factory=set)


class MessageGenerator:
    """Random but reproducible HL7 v2 messages; ``features`` names what each one exercises."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def message(self) -> Generated:
        rng = self.rng
        out = Generated(b"")
        version = rng.choice(["2.3", "2.5.1", "2.5.1", "2.9"])
        if rng.random() < 0.5:
            field_sep, comp, rep, esc, sub = "|", "^", "~", "\\", "&"
        else:
            field_sep, comp, rep, esc, sub = rng.sample(DELIMITER_POOL, 5)
            out.features.add("custom delimiters")
        trunc = ""
        if rng.random() < 0.2:
            trunc = rng.choice([c for c in DELIMITER_POOL if c not in (field_sep, comp, rep, esc, sub)])
            version = rng.choice(["2.7", "2.7", "2.9"])
            out.features.add("truncation character")
        charset, codec, vocabularies = rng.choice(CHARSETS)
        out.features |= {f"version {version}", f"codec {codec}"}
        self.d = {"F": field_sep, "S": comp, "R": rep, "E": esc, "T": sub, "P": trunc}
        self.codec, self.vocabularies, self.features = codec, vocabularies, out.features

        kind = rng.choice(["ORU^R01^ORU_R01", "MDM^T02^MDM_T02", "ADT^A08^ADT_A01"])
        msh = [
            "MSH", comp + rep + esc + sub + trunc, "RIS", "GENHOSP", "MEDROUTE", "GENHOSP", "20240302101500", "",
            kind.replace("^", comp), f"G{rng.randrange(10**6):06d}", "P", version, "", "", "", "", "", charset,
        ]  # fmt: skip
        if not charset and rng.random() < 0.5:
            msh = msh[:12]
        segments = [field_sep.join(msh), self._join(["PID", "1", "", f"MRN{rng.randrange(10**5)}", "", "DOE"])]
        if kind.startswith("MDM"):
            segments.append(self._join(["TXA", "1", "DS", "TX", "20240303135000"]))
        else:
            segments.append(self._join(["OBR", "1", "ORD1", "", "71020" + comp + "CHEST XRAY" + comp + "CPT4"]))
        for _ in range(rng.randint(1, 7)):
            segments.append(self._body_segment())

        ending_name = rng.choice(list(ENDINGS))
        ending = ENDINGS[ending_name]
        out.features.add(f"{ending_name} endings")
        if rng.random() < 0.1:
            segments.insert(rng.randint(2, len(segments)), "")  # a blank line between segments
            out.features.add("blank line")
        text = ending.join(segments) + (ending if rng.random() < 0.8 else "")
        raw = text.encode(codec)
        if codec == "utf-8" and rng.random() < 0.3:
            raw = charsets.UTF8_BOM + raw
            out.features.add("byte order mark")
        out.raw = raw
        return out

    def _join(self, values: list[str]) -> str:
        return self.d["F"].join(values)

    def _body_segment(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            value_type = rng.choice(OBX_TYPES)
            self.features.add(f"OBX {value_type or 'without type'}")
            if value_type in ("TX", "FT", "ST"):
                value = self._field()
                value_type = rng.choice([value_type, value_type.lower(), f" {value_type}"])
            elif value_type in ("CE", "CWE"):
                value = self.d["S"].join(["R91.8", self._words(2), "I10"])
            elif value_type == "NM":
                value = "5.4"
            else:
                value = self._words(3)
            values = ["OBX", "1", value_type, "RPT" + self.d["S"] + "Report", "", value, "", "", "", "", "", "F"]
            return self._join(values)
        if roll < 0.8:
            self.features.add("NTE")
            return self._join(["NTE", "1", rng.choice(["", "L", "P"]), self._field()])
        self.features.add("Z-segment")
        name = "Z" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(2))
        return self._join([name, "1", self._field()])

    def _field(self) -> str:
        """A text field: repetitions (some empty) of words, escape sequences and raw separators.

        A field of blank space only is never produced: hl7apy dropped it and the new reader keeps it as a
        blank line (see ``DELIBERATE_DIFFERENCES``).
        """
        rng = self.rng
        repetitions = []
        for _ in range(rng.choice([1, 1, 1, 2, 3, 4])):
            if rng.random() < 0.15:
                repetitions.append("")
                self.features.add("empty repetition")
            else:
                repetitions.append(self._text())
        value = self.d["R"].join(repetitions)
        if len(repetitions) > 1:
            self.features.add("repetitions")
        return value if value.strip() else ""

    def _text(self) -> str:
        rng = self.rng
        parts = [" " * rng.choice([0, 0, 0, 1, 3])]
        for _ in range(rng.randint(1, 8)):
            parts.append(self._token())
            parts.append(rng.choice([" ", " ", "", "  "]))
        return "".join(parts)

    def _token(self) -> str:
        rng = self.rng
        esc = self.d["E"]
        roll = rng.random()
        if roll < 0.5:
            return self._words(rng.randint(1, 3))
        if roll < 0.65:
            code = rng.choice("FSTRE" + ("P" if self.d["P"] else ""))
            self.features.add(f"\\{code}\\")
            return f"{esc}{code}{esc}"
        if roll < 0.72:
            self.features.add("\\X..\\")
            return f"{esc}X{self._words(1).encode(self.codec).hex().upper()}{esc}"
        if roll < 0.8:
            command = rng.choice(FORMATTING)
            self.features.add(f"\\{command.split()[0]}\\")
            return f"{esc}{command}{esc}"
        if roll < 0.86:
            code = rng.choice(["H", "N", "Zab1", "ZLOCAL", "C2842"])
            self.features.add(f"\\{code[0]}..\\")
            return f"{esc}{code}{esc}"
        if roll < 0.94:  # TX/FT text with components and subcomponents, as some senders write it
            self.features.add("raw separators")
            return self._words(1) + rng.choice([self.d["S"], self.d["T"]]) + self._words(1)
        if roll < 0.97 and not self.d["P"]:
            self.features.add("\\P\\ undeclared")
            return f"{esc}P{esc}"  # no truncation character declared: kept as written
        self.features.add("lone escape")
        return f"{self._words(1)}{esc}{self._words(1)}"  # not an escape sequence: kept as written

    def _words(self, count: int) -> str:
        vocabulary = WORDS[self.rng.choice(self.vocabularies)].split()
        return " ".join(self.rng.choice(vocabulary) for _ in range(count))


def corpus() -> list[Generated]:
    generator = MessageGenerator(random.Random(SEED))
    return [generator.message() for _ in range(CORPUS_SIZE)]


def both_readings(raw: bytes) -> tuple[tuple[str, list[str]], tuple[str, list[str]], str]:
    """(old text, sources), (new text, sources) and which old parser read ``raw``."""
    decoded = charsets.decode(raw)
    new = extract_text(record_from(raw, decoded.codec))
    old = reference_text(decoded.text, decoded.codec)
    return (old.text, old.sources), (new.text, new.sources), old.parser


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.hl7")))
def test_fixture_reads_the_same(name: str) -> None:
    old, new, _ = both_readings((FIXTURES / name).read_bytes())
    assert new == old


def test_generated_corpus_reads_the_same() -> None:
    parsers: Counter[str] = Counter()
    mismatches = []
    with_text = 0
    for number, generated in enumerate(corpus()):
        old, new, parser = both_readings(generated.raw)
        parsers[parser] += 1
        with_text += bool(new[0])
        if new != old:
            mismatches.append(f"#{number} {generated.raw!r}\n  old {old!r}\n  new {new!r}")
    assert not mismatches, f"{len(mismatches)} of {CORPUS_SIZE} differ (seed {SEED}):\n" + "\n".join(mismatches[:5])
    # Both of the old paths were exercised, and most messages carry text.
    assert parsers["hl7apy"] >= CORPUS_SIZE // 4 and parsers["fallback"] >= CORPUS_SIZE // 4, parsers
    assert with_text >= CORPUS_SIZE * 3 // 4


def test_generated_corpus_covers_the_features() -> None:
    seen = set().union(*(g.features for g in corpus()))
    wanted = {
        "custom delimiters", "truncation character", "blank line", "byte order mark",
        "version 2.3", "version 2.5.1", "version 2.7", "version 2.9",
        "codec ascii", "codec iso8859-1", "codec utf-8", "codec gb18030",
        "CR endings", "LF endings", "CRLF endings",
        "OBX TX", "OBX FT", "OBX ST", "OBX CE", "OBX CWE", "OBX NM", "OBX without type", "NTE", "Z-segment",
        "repetitions", "empty repetition", "raw separators", "lone escape", "\\P\\ undeclared",
        "\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\", "\\P\\", "\\X..\\", "\\.br\\", "\\.sp\\", "\\.sk\\",
        "\\H..\\", "\\N..\\", "\\Z..\\", "\\C..\\",
    }  # fmt: skip
    assert wanted <= seen, wanted - seen


MSH = "MSH|^~\\&|RIS|GENHOSP|MEDROUTE|GENHOSP|20240302101500||ORU^R01^ORU_R01|D1|P|2.5.1||||||UNICODE UTF-8"

# (segments after MSH, old text, new text): where the new reading differs on purpose, and why.
DELIBERATE_DIFFERENCES = [
    # A field of blank space only. hl7apy dropped it (its parser skips fields whose text strips to
    # nothing), the old fallback and an empty repetition ("a~~b") gave a blank line. HL7 v2 keeps spaces as
    # data (a TX/FT line may be blank space) and an empty line is what a blank line of a report is: the
    # new reader keeps it, whichever version the message has. Only blank lines inside the text change.
    pytest.param(
        ["OBX|1|TX|RPT||FINDINGS: clear.||||||F", "OBX|2|TX|RPT||   ||||||F", "OBX|3|TX|RPT||IMPRESSION: normal."],
        "FINDINGS: clear.\nIMPRESSION: normal.",
        "FINDINGS: clear.\n\nIMPRESSION: normal.",
        id="blank-space field (hl7apy dropped it)",
    ),
    pytest.param(
        ["OBX|1|TX|RPT||FINDINGS: clear.||||||F", "NTE|1|L|\t", "NTE|2|L|\u3000", "NTE|3|L|signed"],
        "FINDINGS: clear.\nsigned",
        "FINDINGS: clear.\n\n\nsigned",
        id="tab and ideographic space NTE-3",
    ),
    # A segment name padded with a blank ("OBX |"). Not a valid segment ID: the listener refuses such a
    # message (bad_segment_name), so only records of other producers and batch files can hold it. hl7apy
    # kept it as an unknown segment; the old fallback and the new lenient reader strip the name and read
    # the OBX, so that no report text is lost.
    pytest.param(
        ["OBX|1|TX|RPT||FINDINGS: clear.||||||F", "OBX |2|TX|RPT||IMPRESSION: normal.||||||F"],
        "FINDINGS: clear.",
        "FINDINGS: clear.\nIMPRESSION: normal.",
        id="segment name padded with a blank",
    ),
]


@pytest.mark.parametrize(("segments", "old_text", "new_text"), DELIBERATE_DIFFERENCES)
def test_deliberate_differences(segments: list[str], old_text: str, new_text: str) -> None:
    raw = "\r".join([MSH, *segments]) + "\r"
    old, new, parser = both_readings(raw.encode("utf-8"))
    assert parser == "hl7apy"
    assert old[0] == old_text
    assert new[0] == new_text
    # Under a version hl7apy does not know, the old fallback already read it the new way.
    old_fallback, _, parser = both_readings(raw.replace("|2.5.1", "|2.9").encode("utf-8"))
    assert parser == "fallback" and old_fallback[0] == new_text


def test_fixture_directory_is_not_empty() -> None:
    assert len(list(FIXTURES.glob("*.hl7"))) >= 10


def test_production_code_does_not_import_the_reference() -> None:
    root = FIXTURES.parents[2]
    packages = ("formats", "listeners", "medroute", "models", "pipeline", "shell", "tools")
    users = [
        str(path.relative_to(root))
        for package in packages
        for path in (root / package).rglob("*.py")
        if "hl7apy_reference" in path.read_text(encoding="utf-8")
    ]
    assert users == []
