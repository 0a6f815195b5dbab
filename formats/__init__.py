"""Formats medroute reads and writes, between the kernel and the edges: HL7 v2 (``formats.hl7``) and
documents (``formats.documents``). Pure functions of bytes and text: no I/O, no Kafka, no models."""
