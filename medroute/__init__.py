"""medroute: on-premises AI classification and routing of HL7 and DICOM traffic."""

from medroute.config import disable_library_telemetry

__version__ = "0.1.0"

disable_library_telemetry()  # before any module of the project can import onnxruntime
