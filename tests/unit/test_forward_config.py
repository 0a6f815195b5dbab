"""The destinations file: what it accepts, and errors that name file:line."""

from __future__ import annotations

import pytest

from pipeline.forward.destinations import DestinationsError, parse_destinations
from pipeline.forward.naming import check_pattern

GOOD = """\
destinations:
  pacs:
    type: dicom
    host: 127.0.0.1
    port: 4242
    called_ae: ORTHANC
    concurrency: 4
    backoff: {initial: 0.5, maximum: 10}
    breaker: {failures: 3, open_seconds: 2}
  ehr:
    type: mllp
    host: ehr.local
    port: 6661
    attempts: 3
    tls: {ca: /etc/ca.pem}
  intake:
    type: http
    url: https://intake.local/fhir
    headers: {X-Site: north}
    body: decision
  review-queue:
    type: folder
    path: /srv/review
    pattern: "{date}/{kind}/{message_id}.{ext}"
  analytics:
    type: kafka
    topic: analytics.items
    kinds: [hl7]
"""


def test_a_good_file_reads_with_its_defaults() -> None:
    destinations = parse_destinations(GOOD, "d.yaml")
    pacs, ehr, intake, folder, analytics = destinations
    assert (pacs.type, pacs.option("port"), pacs.kinds, pacs.concurrency) == ("dicom", 4242, ("dicom",), 4)
    assert (pacs.backoff.initial, pacs.backoff.maximum, pacs.breaker.failures) == (0.5, 10.0, 3)
    assert (ehr.kinds, ehr.attempts, ehr.tls.ca, ehr.timeout) == (("hl7",), 3, "/etc/ca.pem", 30.0)
    assert intake.kinds == ("hl7", "dicom") and intake.option("body") == "decision"
    assert folder.option("pattern").startswith("{date}")
    assert analytics.kinds == ("hl7",) and "pacs" in destinations


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("destinations:\n  x:\n    host: a\n", 3, "has no 'type'"),
        ("destinations:\n  x:\n    type: ftp\n", 3, "unknown type 'ftp'"),
        ("destinations:\n  x:\n    type: mllp\n    host: a\n", 3, "needs 'port'"),
        ("destinations:\n  x:\n    type: mllp\n    host: a\n    port: 99999\n", 5, "TCP port"),
        ("destinations:\n  x:\n    type: mllp\n    host: a\n    port: 1\n    called_ae: X\n", 6, "unknown key"),
        ("destinations:\n  x:\n    type: dicom\n    host: a\n    port: 1\n    called_ae: ABCDEFGHIJKLMNOPQ\n", 6, "16"),
        ("destinations:\n  x:\n    type: mllp\n    host: a\n    port: 1\n    kinds: [dicom]\n", 6, "cannot carry"),
        ("destinations:\n  x:\n    type: http\n    url: ftp://a\n", 4, "http://"),
        ("destinations:\n  x:\n    type: folder\n    path: /a\n    pattern: '{patient}'\n", 5, "unknown field"),
        ("destinations:\n  x:\n    type: folder\n    path: /a\n    pattern: '../{kind}'\n", 5, "inside the folder"),
        ("destinations:\n  x:\n    type: kafka\n    topic: t\n    attempts: 0\n", 5, "at least 1"),
        ("destinations:\n  x:\n    type: kafka\n    topic: t\n    backoff: {jitter: 2}\n", 5, "fraction"),
        ("destinations:\n  x:\n    type: mllp\n    host: a\n    port: 1\n    tls: {cert: c}\n", 6, "both"),
        ("destinations:\n  x: {type: kafka, topic: t}\n  x: {type: kafka, topic: u}\n", 3, "twice"),
        ("routes: []\n", 1, "unknown top-level key"),
        ("destinations: [\n", 2, "invalid YAML"),
        ("", 1, "empty"),
    ],
)
def test_errors_name_the_file_and_line(text: str, line: int, says: str) -> None:
    with pytest.raises(DestinationsError) as caught:
        parse_destinations(text, "dest.yaml")
    message = str(caught.value)
    assert message.startswith(f"dest.yaml:{line}:"), message
    assert says in message, message


def test_folder_patterns() -> None:
    assert check_pattern("{kind}/{study_uid}/{sop_instance_uid}.dcm") is None
    assert "unknown field" in (check_pattern("{name}") or "")
    assert check_pattern("/abs/{kind}") is not None
