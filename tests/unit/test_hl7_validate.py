"""``medroute hl7 validate``: files of HL7 messages checked as the listener's strict mode would, no PHI."""

from __future__ import annotations

from hl7apy.exceptions import MaxLengthReached

from formats.hl7.validate import describe


def test_describe_takes_no_element_names_from_failures_that_quote_values() -> None:
    assert describe(MaxLengthReached("MRN_100234", 20)) == "hl7apy MaxLengthReached: exceed the max length"
    assert "MRN_1" not in describe(ValueError("MRN_1 is not an HL7 valid date value"))
