"""``python -m listeners.dicom``: run the DICOM listener (same as ``medroute listen dicom``)."""

import sys

from listeners.dicom.server import main

if __name__ == "__main__":
    sys.exit(main())
