import sys

from tools.operations.replay import main

sys.exit(main())
