"""Documents embedded in OBX-5 as ED (base64 PDF, RTF, HTML, text): read like report text; a broken one
is named in ``failures`` and the decision says ``extraction_failed``, never a crash."""

from __future__ import annotations

import base64

import pytest
from fpdf import FPDF

from pipeline.extract import extract_text
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided
from pipeline.routing import EXTRACTION_FAILED
from pipeline.rules import load_rules
from tests.unit.test_pipeline_support import FakeClassifier, record_from

MSH = "MSH|^~\\&|DOCS|GENHOSP|MEDROUTE|GENHOSP|20240302101500||MDM^T02^MDM_T02|D1|P|2.5.1"
PID = "PID|1||MRN300001^^^GENHOSP^MR||SAMPLE^ANN||19700101|F"
TXA = "TXA|1|DS|AP|20240302||||||||DOC1||||||AU"
REPORT = "DISCHARGE SUMMARY: admitted with pneumonia, treated with antibiotics, discharged home."


def pdf_bytes(*lines: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    for line in lines:
        pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def mdm(*obx: str) -> str:
    return "\r".join([MSH, PID, TXA, *obx]) + "\r"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_base64_pdf_report_is_read_from_its_text_layer() -> None:
    raw = mdm(f"OBX|1|ED|DOC^Discharge summary||^application^pdf^Base64^{b64(pdf_bytes(REPORT))}||||||F")
    extracted = extract_text(record_from(raw))
    assert extracted.text == REPORT
    assert extracted.sources == ["OBX-5 ED pdf"]
    assert extracted.failures == []


def test_hl7_table_style_type_and_wrapped_base64() -> None:
    encoded = b64(pdf_bytes("FINDINGS: normal.", "IMPRESSION: no acute disease."))
    wrapped = "\\.br\\".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    raw = mdm(f"OBX|1|ED|DOC||MEDROUTE^AP^PDF^Base64^{wrapped}||||||F")
    assert extract_text(record_from(raw)).text.splitlines() == ["FINDINGS: normal.", "IMPRESSION: no acute disease."]


def test_rtf_html_and_plain_text_documents() -> None:
    rtf = rb"{\rtf1\ansi{\fonttbl{\f0 Arial;}}\f0 FINDINGS: clear lungs.\par IMPRESSION: normal.\par}"
    raw = mdm(
        f"OBX|1|ED|DOC||^TEXT^RTF^Base64^{b64(rtf)}||||||F",
        f"OBX|2|ED|DOC||^text^html^Base64^{b64(b'<html><body><p>Follow up in <b>6</b> weeks.</p></body></html>')}"
        "||||||F",
        "OBX|3|ED|DOC||^TEXT^PLAIN^A^Signed \\T\\ dated.||||||F",
    )
    extracted = extract_text(record_from(raw))
    assert extracted.text.splitlines() == [
        "FINDINGS: clear lungs.",
        "IMPRESSION: normal.",
        "Follow up in 6 weeks.",
        "Signed & dated.",
    ]
    assert extracted.sources == ["OBX-5 ED rtf", "OBX-5 ED html", "OBX-5 ED text"]


def test_embedded_image_is_not_text_and_not_a_failure() -> None:
    jpeg = b64(b"\xff\xd8\xff\xe0 not really a jpeg")
    raw = mdm(f"OBX|1|ED|IMG||^IM^JPEG^Base64^{jpeg}||||||F")
    extracted = extract_text(record_from(raw))
    assert (extracted.text, extracted.failures) == ("", [])


@pytest.mark.parametrize(
    ("value", "failure"),
    [
        ("^application^pdf^Base64^%%%not*base64%%%", "OBX-5 ED: ED data is not valid base64"),
        (f"^application^pdf^Base64^{b64(b'%PDF-1.4 truncated garbage')}", "OBX-5 ED: unreadable PDF"),
        (f"^AP^PDF^Base64^{b64(b'this is no PDF at all')}", "OBX-5 ED: not a PDF (no %PDF- header)"),
        ("^AP^PDF^Base64^", "OBX-5 ED: ED field without data"),
        ("^AP^PDF^Hex^ZZ", "OBX-5 ED: ED data is not valid hex"),
    ],
)
def test_broken_documents_are_named_and_the_decision_says_extraction_failed(value: str, failure: str) -> None:
    raw = mdm(f"OBX|1|ED|DOC||{value}||||||F", "NTE|1||Comment kept.")
    record = record_from(raw)
    extracted = extract_text(record)
    assert extracted.text == "Comment kept."  # the rest of the message is still read
    assert len(extracted.failures) == 1 and extracted.failures[0].startswith(failure)
    (outcome,) = Hl7Feed(FakeClassifier(), load_rules()).process([record])
    assert isinstance(outcome, Decided) and outcome.decision.reason == EXTRACTION_FAILED
    assert "SAMPLE" not in extracted.failures[0] and "MRN" not in extracted.failures[0]


def test_decision_of_a_readable_message_has_no_reason() -> None:
    record = record_from(mdm("OBX|1|TX|DOC||Discharged home.||||||F"))
    (outcome,) = Hl7Feed(FakeClassifier(), load_rules()).process([record])
    assert isinstance(outcome, Decided) and outcome.decision.reason is None


def test_an_ed_pdf_report_is_classified_and_routed_from_its_text() -> None:
    raw = mdm(f"OBX|1|ED|DOC^Discharge summary||^application^pdf^Base64^{b64(pdf_bytes(REPORT))}||||||F")
    classifier = FakeClassifier()
    (outcome,) = Hl7Feed(classifier, load_rules()).process([record_from(raw)])
    assert classifier.calls == [[REPORT]]  # the model read the PDF's text layer
    assert isinstance(outcome, Decided)
    decision = outcome.decision
    assert (decision.label, decision.rule, decision.destinations) == (
        "discharge_summary",
        "discharge-summaries",
        ["ehr-documents"],
    )
    assert decision.reason is None
