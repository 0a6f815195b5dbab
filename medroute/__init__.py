"""medroute: on-premises AI classification and routing of HL7 and DICOM traffic."""

__version__ = "0.1.0"
