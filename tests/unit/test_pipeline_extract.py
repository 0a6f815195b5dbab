"""Clinical text extraction from HL7 v2 messages: what is read, what is not, and how it is cleaned."""

from __future__ import annotations

import pytest

from pipeline.extract import extract_text, message_kind, message_type
from tests.unit.test_pipeline_support import fixture_record, record_from

MSH = "MSH|^~\\&|RIS|GENHOSP|MEDROUTE|GENHOSP|20240302101500||ORU^R01^ORU_R01|C1|P|2.5.1"
PID = "PID|1||MRN200871^^^GENHOSP^MR~X0871^^^SSA^SS||SAMPLE^BOB||19651103|M"


def message(*segments: str, msh: str = MSH, ending: str = "\r") -> str:
    return ending.join([msh, *segments]) + ending


def test_oru_radiology_report_reads_obx_tx_lines_and_nte_in_order() -> None:
    extracted = extract_text(fixture_record("oru_r01_radiology.hl7"))
    assert extracted.sources == ["OBX-5", "NTE-3"]
    assert extracted.text.splitlines() == [
        "CLINICAL HISTORY: Cough for two weeks.",
        "FINDINGS: The lungs are clear. No pleural effusion. Heart size normal.",
        "Mediastinal contours & hila unremarkable.",  # \T\ is the subcomponent separator
        "IMPRESSION: No acute cardiopulmonary abnormality.",
        "Report electronically signed by the reading radiologist.",
    ]
    # Names and identifiers of PID and OBR never reach the text.
    assert "SAMPLE" not in extracted.text and "MRN200871" not in extracted.text
    assert "CHEST XRAY" not in extracted.text


def test_mdm_document_body_comes_from_the_obx_after_txa() -> None:
    extracted = extract_text(fixture_record("mdm_t02.hl7"))
    assert extracted.sources == ["OBX-5"]
    assert extracted.text == (
        "Patient admitted with community acquired pneumonia.\n"
        "Treated with oral antibiotics; discharged in stable condition."
    )
    assert "DOC88812" not in extracted.text  # TXA metadata is not text


@pytest.mark.parametrize("name", ["adt_a01.hl7", "orm_o01.hl7", "siu_s12.hl7", "z_segments.hl7"])
def test_messages_without_report_text_have_none(name: str) -> None:
    extracted = extract_text(fixture_record(name))
    assert extracted.text == ""
    assert extracted.sources == []
    assert not extracted.has_text


def test_coded_and_numeric_values_are_not_report_text() -> None:
    raw = message(
        PID,
        "OBX|1|CE|DX^Diagnosis||R91.8^Other nonspecific abnormal finding of lung^I10||||||F",
        "OBX|2|CWE|DX^Diagnosis||J18.9^Pneumonia^I10||||||F",
        "OBX|3|NM|GLU^Glucose||5.4|mmol/L|||||F",
        "OBX|4|RP|PDF^Report||http://pacs/doc/1^PACS^AP^PDF||||||F",
        "OBX|5||NOTE^Note||value without a type||||||F",
        "OBX|6|ST|COMMENT^Comment||Short free text.||||||F",
    )
    extracted = extract_text(record_from(raw))
    assert extracted.text == "Short free text."
    assert extracted.sources == ["OBX-5"]
    assert extracted.failures == []


def test_formatted_text_line_breaks_and_escapes() -> None:
    raw = message(
        PID,
        "OBX|1|FT|RPT^Report||EXAM: CT HEAD\\.br\\FINDINGS: No bleed \\T\\ no mass.\\.sp 2\\"
        "IMPRESSION: Normal \\H\\CT\\N\\ of the head.||||||F",
    )
    extracted = extract_text(record_from(raw))
    assert extracted.text == "EXAM: CT HEAD\nFINDINGS: No bleed & no mass.\n\nIMPRESSION: Normal CT of the head."


def test_every_delimiter_escape_and_hex_data_is_unescaped() -> None:
    raw = message(
        PID,
        "OBX|1|TX|RPT||a \\F\\ b \\S\\ c \\T\\ d \\R\\ e \\E\\ f \\X41424344\\ g||||||F",
        "NTE|1|L|path C:\\temp kept \\Q\\ unknown kept \\Zlocal\\ dropped",
    )
    extracted = extract_text(record_from(raw))
    assert extracted.text.splitlines() == [
        "a | b ^ c & d ~ e \\ f ABCD g",
        "path C:\\temp kept \\Q\\ unknown kept  dropped",
    ]


def test_hex_escape_decodes_with_the_message_charset() -> None:
    raw = message(PID, "OBX|1|TX|RPT||Befund unauff\\XE4\\llig.||||||F", msh=MSH + "|||||DEU|8859/1")
    assert extract_text(record_from(raw, "iso8859-1")).text == "Befund unauffällig."


def test_custom_delimiters_are_taken_from_msh() -> None:
    raw = message(
        "PID#1##MRN600001$$$GENHOSP$MR%ALT77$$$OTHER$MR##TRIAL$FRANK",
        "OBX#1#TX#RPT$Report##FINDINGS: clear *F* fine *S* ok *T* and *E* more%second line#####F",
        msh="MSH#$%*!#LABSYS#GENHOSP#MEDROUTE#GENHOSP#20240306120000##ORU$R01$ORU_R01#LAB6#P#2.5.1",
    )
    record = record_from(raw)
    extracted = extract_text(record)
    assert extracted.text == "FINDINGS: clear # fine $ ok ! and * more\nsecond line"
    assert message_type(record) == "ORU^R01^ORU_R01"
    assert message_kind(record) == "ORU"


def test_custom_delimiter_fixture_skips_numeric_obx_and_reads_nte() -> None:
    extracted = extract_text(fixture_record("custom_delimiters.hl7"))
    assert extracted.text == "Value checked # repeat $ ok"
    assert extracted.sources == ["NTE-3"]


def test_repetitions_become_lines_and_z_segments_are_tolerated() -> None:
    raw = message(
        PID,
        "ZPI|custom|VIP^N|PREFERRED^EN~FR",
        "OBX|1|TX|RPT||Line one~Line two~~Line four||||||F",
        "ZXT|1|not report text",
        "NTE|1|L|first comment~second comment",
    )
    extracted = extract_text(record_from(raw))
    assert extracted.text == "Line one\nLine two\n\nLine four\nfirst comment\nsecond comment"
    assert "not report text" not in extracted.text


def test_gb18030_chinese_report() -> None:
    record = fixture_record("gb18030_chinese.hl7", encoding="gb18030")
    extracted = extract_text(record)
    assert extracted.text == "检查所见：双肺纹理清晰，未见明显实质性病变。\n诊断意见：胸部CT平扫未见异常。"
    family_name = record.text().split("\r")[1].split("|")[5].split("^")[0]
    assert family_name and family_name not in extracted.text


@pytest.mark.parametrize(
    ("name", "encoding", "expected"),
    [
        ("latin1_8859_1.hl7", "iso8859-1", "Befund: Herz und Lunge unauffällig, kein Erguß."),
        ("shift_jis.hl7", "shift_jis", "所見：脳実質に明らかな異常信号を認めません。"),
        ("iso2022_jp.hl7", "iso2022_jp", "所見：異常なし。"),
        ("utf8_bom.hl7", "utf-8", "Résultat : pas d’anomalie détectée"),
    ],
)
def test_other_character_sets(name: str, encoding: str, expected: str) -> None:
    assert extract_text(fixture_record(name, encoding)).text.startswith(expected)


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_lf_and_crlf_segment_endings(ending: str) -> None:
    raw = message(PID, "OBX|1|TX|RPT||IMPRESSION: normal.||||||F", "NTE|1||signed", ending=ending)
    extracted = extract_text(record_from(raw))
    assert extracted.text == "IMPRESSION: normal.\nsigned"


@pytest.mark.parametrize(
    "raw",
    [
        # HL7 v2.9: a version hl7apy 1.3.5 does not know.
        message(PID, "OBX|1|TX|RPT||IMPRESSION: normal.||||||F", msh=MSH.replace("2.5.1", "2.9")),
        # A segment name hl7apy refuses.
        message(PID, "X1|whatever", "OBX|1|TX|RPT||IMPRESSION: normal.||||||F"),
    ],
)
def test_messages_hl7apy_refuses_are_read_too(raw: str) -> None:
    extracted = extract_text(record_from(raw))
    assert extracted.text == "IMPRESSION: normal."
    assert extracted.sources == ["OBX-5"]


@pytest.mark.parametrize(
    ("name", "kind", "full"),
    [
        ("adt_a01.hl7", "ADT", "ADT^A01^ADT_A01"),
        ("oru_r01_radiology.hl7", "ORU", "ORU^R01^ORU_R01"),
        ("mdm_t02.hl7", "MDM", "MDM^T02^MDM_T02"),
        ("orm_o01.hl7", "ORM", "ORM^O01^ORM_O01"),
        ("siu_s12.hl7", "SIU", "SIU^S12^SIU_S12"),
        ("custom_delimiters.hl7", "ORU", "ORU^R01^ORU_R01"),
    ],
)
def test_message_kind_and_type(name: str, kind: str, full: str) -> None:
    record = fixture_record(name)
    assert message_kind(record) == kind
    assert message_type(record) == full


def test_undecodable_bytes_raise() -> None:
    record = record_from(message(PID, "OBX|1|TX|RPT||caf\xe9||||||F").encode("latin-1"), "iso8859-1")
    broken = record.__class__(**{**record.__dict__, "encoding": "utf-8"})
    with pytest.raises(UnicodeDecodeError):
        extract_text(broken)
