"""Invented sample HL7 v2 traffic: for `medroute up`, the integration tests and the benchmarks.

Every name, identifier and report here is made up. The mix covers what real feeds do: several
message types, reports in OBX/NTE/TXA, escape sequences, Z-segments, repetitions, custom
delimiters, CR / LF / CRLF segment endings and MSH-18 charsets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from formats.hl7.delimiters import Delimiters
from formats.hl7.escapes import escape

# Short report texts written for this project, one or two per document type of the default model.
REPORTS: dict[str, list[str]] = {
    "radiology": [
        "EXAM: Chest PA and lateral. FINDINGS: The heart size is normal. The lungs are clear without "
        "focal consolidation, effusion or pneumothorax. IMPRESSION: No acute cardiopulmonary process.",
        "CT ABDOMEN AND PELVIS WITH CONTRAST. TECHNIQUE: Axial images were obtained. FINDINGS: The liver, "
        "spleen and pancreas are unremarkable. No free fluid. IMPRESSION: Normal CT of the abdomen.",
    ],
    "discharge": [
        "DISCHARGE SUMMARY. ADMISSION DIAGNOSIS: Community acquired pneumonia. HOSPITAL COURSE: The patient "
        "was treated with intravenous antibiotics and improved. DISCHARGE DIAGNOSIS: Pneumonia, resolved. "
        "DISCHARGE MEDICATIONS: Amoxicillin. FOLLOW UP: With primary care in one week.",
    ],
    "progress": [
        "PROGRESS NOTE. SUBJECTIVE: Feels better today, less short of breath. OBJECTIVE: Vitals stable. "
        "Lungs with few crackles. ASSESSMENT AND PLAN: Continue current antibiotics, recheck labs tomorrow.",
    ],
    "consult": [
        "CONSULTATION. REASON FOR CONSULTATION: Chest pain. HISTORY OF PRESENT ILLNESS: A 58-year-old man "
        "with two days of exertional chest pain. PAST MEDICAL HISTORY: Hypertension. PHYSICAL EXAMINATION: "
        "Regular rhythm, no murmur. IMPRESSION: Possible unstable angina. RECOMMENDATIONS: Stress test.",
    ],
    "emergency": [
        "CHIEF COMPLAINT: Laceration to the left hand. HISTORY: Cut with a kitchen knife one hour ago. "
        "EMERGENCY DEPARTMENT COURSE: Wound irrigated and closed with four sutures. DISPOSITION: Discharged "
        "home in stable condition with wound care instructions.",
    ],
    "letter": [
        "Dear Dr. Smith, Thank you for referring this patient to our clinic. I saw him today for evaluation "
        "of his knee pain. I have recommended physical therapy. Sincerely,",
    ],
}

FIRST_NAMES = ["ALEX", "SAM", "JORDAN", "TAYLOR", "MORGAN", "CASEY", "RILEY", "JAMIE"]
LAST_NAMES = ["DOE", "ROE", "POE", "MOE", "LOE", "KOE"]
SEGMENT_ENDINGS = ("\r", "\r", "\r", "\n", "\r\n")


@dataclass(frozen=True)
class SampleMessage:
    """One sample message: its bytes on the wire and what a test expects of it."""

    raw: bytes
    control_id: str
    patient_id: str
    message_type: str
    has_text: bool


def build_message(
    rng: random.Random, control_id: str, patient_id: str, when: datetime, kind: str | None = None
) -> SampleMessage:
    """One random but well-formed message; ``kind`` forces ADT, ORU or MDM."""
    kind = kind or rng.choice(["ORU", "ORU", "MDM", "ADT"])
    field_sep, encoding = ("|", "^~\\&") if rng.random() < 0.85 else ("#", "$%*!")
    component, repetition, _escape_char, sub = encoding
    charset = rng.choice(["", "UNICODE UTF-8", "8859/1", "ASCII"])
    stamp = when.strftime("%Y%m%d%H%M%S")
    family, given = rng.choice(LAST_NAMES), rng.choice(FIRST_NAMES)
    message_type = {"ADT": "ADT^A01^ADT_A01", "ORU": "ORU^R01^ORU_R01", "MDM": "MDM^T02^MDM_T02"}[kind]
    msh = [
        "MSH", encoding, rng.choice(["RIS", "EPIC", "LAB"]), "GENERAL HOSPITAL", "MEDROUTE", "MEDROUTE",
        stamp, "", message_type.replace("^", component), control_id, "P", "2.5.1", "", "", "", "", "", charset,
    ]
    pid = [
        "PID", "1", "",
        f"{patient_id}{component}{component}{component}GH{component}MR{repetition}X{patient_id[-4:]}"
        f"{component}{component}{component}SSA{component}SS",
        "", f"{family}{component}{given}", "", "19700101", rng.choice("MFU"),
    ]
    segments = [msh, ["EVN", "A01" if kind == "ADT" else "", stamp], pid, ["PV1", "1", rng.choice("IOE")]]
    text = ""
    if kind != "ADT":
        doc_kind = rng.choice(list(REPORTS))
        text = rng.choice(REPORTS[doc_kind])
        if charset == "8859/1" and rng.random() < 0.5:
            text = text.replace("patient", "patient (café)", 1)
        if kind == "MDM":
            segments.append(["TXA", "1", doc_kind.upper()[:2], "TX", stamp])
        else:
            segments.append(["OBR", "1", control_id, "", f"71020{component}CHEST XRAY{component}L"])
        # Long reports arrive as several OBX lines; some feeds add a trailing NTE.
        lines = [chunk.strip() for chunk in text.split(". ") if chunk.strip()]
        for n, line in enumerate(lines, start=1):
            value = escape(line if line.endswith((".", ",")) else line + ".", Delimiters(field_sep, *encoding))
            segments.append(["OBX", str(n), "TX", f"REPORT{component}Report text", "", value, "", "", "", "", "", "F"])
        if rng.random() < 0.3:
            segments.append(["NTE", "1", "L", escape("Reviewed & signed.", Delimiters(field_sep, *encoding))])
    if rng.random() < 0.3:
        segments.append(["ZPI", "custom", f"extra{sub}data"])
    ending = rng.choice(SEGMENT_ENDINGS)
    lines = []
    for segment in segments:
        if segment[0] == "MSH":
            lines.append("MSH" + field_sep + field_sep.join(segment[1:]).rstrip(field_sep))
        else:
            lines.append(field_sep.join(segment))
    body = ending.join(lines) + ending
    codec = "latin-1" if charset == "8859/1" else "utf-8"
    return SampleMessage(body.encode(codec), control_id, patient_id, message_type, bool(text))


def sample_messages(count: int, seed: int = 7, patients: int = 40, prefix: str = "S") -> list[SampleMessage]:
    """``count`` varied messages over a pool of ``patients`` (so one patient sends several)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, 8, 0, 0)
    return [
        build_message(
            rng,
            control_id=f"{prefix}{seed}-{n:06d}",
            patient_id=f"MRN{rng.randrange(patients):06d}",
            when=start + timedelta(minutes=n),
        )
        for n in range(count)
    ]
