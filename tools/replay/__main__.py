import sys

from tools.replay import main

sys.exit(main())
