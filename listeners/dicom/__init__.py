"""DICOM C-STORE listener: every instance into the encrypted blob store and ``dicom.inbound`` before
its success status (see :mod:`listeners.dicom.server`)."""
