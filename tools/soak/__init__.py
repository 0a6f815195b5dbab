"""``python -m tools.soak --minutes 10``: a bounded chaos soak on loopback, with forwarding.

Steady HL7 (MLLP) and DICOM (C-STORE) traffic runs while, on a schedule, the MLLP listener, the DICOM
listener, each worker of a pool of two, the forwarder (``medroute forward``) and the Kafka broker are killed
with SIGKILL and restarted, one at a time. The senders behave as real ones: an item is resent until it is
acknowledged. Routing rules send every HL7 message to an EHR (an MLLP receiver that answers AA) and every
image to a PACS (a C-STORE SCP), both in the soak's process, recording every item they receive. At the end
the traffic stops, the system is given time to drain, and the soak checks, from the topics and receivers:

* every acknowledged HL7 message (by MSH-10) and image (by SOP Instance UID) is on its inbound topic;
* every inbound record has a routing decision (records decided twice are counted);
* every stored item reached its destination, none was dead-lettered by the forwarder, and items received
  more often than decided are counted: those received from two forwarder processes (a restart between the
  receipts: the forwarder's documented at-least-once window) apart from any other;
* the worker pool's and the forwarders' committed offsets reach the end of every partition (no lag).

It prints one JSON summary and exits 1 if any check fails (doubles across a forwarder restart only with
``--strict-doubles``).
"""
