"""HL7 v2 read without an element tree (:mod:`formats.hl7.message`), and its charsets, escapes, ACKs, the
stored record and hl7apy's strict validation (:mod:`formats.hl7.validate`)."""
