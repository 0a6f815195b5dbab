import sys

from pipeline.forward.service import main

sys.exit(main())
