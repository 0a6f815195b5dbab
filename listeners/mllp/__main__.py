"""``python -m listeners.mllp``: run the MLLP listener (same as ``medroute listen mllp``)."""

import sys

from listeners.mllp.server import main

if __name__ == "__main__":
    sys.exit(main())
