"""DICOM networking shared by the listener (acceptor) and the forwarders (requestor)."""
